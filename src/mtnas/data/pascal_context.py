"""PASCAL-Context in the multi-task layout of ASTMT / MTI-Net / ATRC / InvPT (5 tasks).

The layout of `PASCAL_MT.tgz` (ASTMT, MTI-Net) and of ATRC's `PASCALContext.tar.gz` (also used by InvPT,
TaskPrompter; MQTransformer reports on the same benchmark, its loader was not checked here):

    root/ImageSets/Context/<split>.txt    one image id per line: train.txt (4998), val.txt (5105)
    root/ImageSets/Parts/<split>.txt      optional: JSON {id: [PASCAL-Part class of each object, −1 if empty]}
    root/JPEGImages/<id>.jpg              8-bit RGB, ~500×375, sizes vary
    root/semseg/VOC12/<id>.png            21 classes (0 = background, 1..20 VOC), 255 = ignored; when absent,
    root/semseg/pascal-context/<id>.png   the same 21 classes derived from PASCAL-Context
    root/human_parts/<id>.mat             PASCAL-Part annotation: struct `anno` {imname, objects(1×N)
                                          {class, class_ind, mask, parts(1×P) {part_name, mask}}}
    root/sal_distill/<id>.png             8-bit grey saliency (distilled), salient where v/255 > 0.5
    root/normals_distill/<id>.png         8-bit RGB normals (distilled), n = 2·v/255 − 1
    root/pascal-context/trainval/<id>.mat `LabelMap`: the 459-class PASCAL-Context labels (1..459)
    root/json/{nyu,context}_classes.json  optional (ATRC/InvPT packaging): class-name → id tables

Every conversion below follows SimonVandenhende/Multi-Task-Learning-PyTorch `data/pascal_context.py` and
`data/custom_transforms.py` (from facebookresearch/astmt), checked against brdav/atrc `src/data/pascal_context.py`
and `src/data/transforms.py` and prismformore/Multi-Task-Transformer `code/data/pascal_context.py`:

* semseg (`source: semseg`): VOC12 file if present, else the pascal-context one (the reference's lookup
  order); k ∈ 0..C−1 → k, 255 → −1 (ignored by every reference loss and metric). Other values: `DataError`.
* human parts (a semseg task with `source: human_parts`): for every object with `class_ind` 15 (person)
  that has parts, each part mask is painted with its class from `HUMAN_PARTS[data.num_human_parts]` (6 by
  default: head, torso, upper arm, lower arm + hand, upper leg, lower leg + foot; 0 = background), later
  parts over earlier ones. An image without such a person, or whose painted map is all background, is
  ignored entirely (−1): the reference marks it 255 in `AddIgnoreRegions`. When `ImageSets/Parts/<split>.txt`
  lists the image without class 15, its .mat is not read (as the reference); otherwise the .mat decides.
  A part name outside the table is a `DataError` (the reference raises a KeyError).
* saliency (`type: saliency`): v/255 > 0.5 → 1, else 0 (i.e. v ≥ 128). No ignore label. A 1-bit PNG reads
  as 0/1 (the reference would read it as all 0; the packaged maps are 8-bit grey).
* normals (`type: normal`): n = 2·v/255 − 1, valid only where the PASCAL-Context `LabelMap` class is one of
  the NYU-v2 classes the distilling network knew (`NORMALS_VALID_CLASSES`: context classes whose name is also
  an NYU class, 'unknown' excluded, plus 'tvmonitor'); everything else is a zero vector (invalid). Valid
  vectors are rescaled to unit length, as the reference's resizing and evaluation do. If more than
  `NORMAL_OFF_FRACTION` of the valid pixels are far from unit length the file is refused (another encoding).
* edges (`type: edge`, `source: pascal-context/trainval`): the reference computes `cv2.Laplacian(LabelMap)`
  (3×3 aperture [[0,1,0],[1,−4,1],[0,1,0]], reflect-101 borders), marks |L| > 0 and thins the mask with
  `skimage.morphology.thin`. Without OpenCV and scikit-image here, the Laplacian is the same correlation in
  scipy (`mode="mirror"` is reflect-101) and `thin` is re-implemented from its published definition (Guo &
  Hall 1989 two-subiteration thinning, lookup tables built from the G1, G2, G3/G3' conditions); the tests
  reproduce scikit-image's documented examples. Like the reference, a pixel whose four neighbours'
  labels happen to sum to four times its own label is not marked. No ignore label.

Images come in many sizes and are resized to `data.image_size` (512×512 by default, the MTI-Net resolution)
by the base class: bilinear for the image, nearest for every target. Consequences: metrics are computed at
that size on nearest-resampled labels, not at the original resolution as in the papers; the one-pixel
boundaries are resampled after thinning, so they may break or double at 512×512 (the reference trains on
the same nearest-resized maps but evaluates with SEISM at full resolution); normals are nearest-resampled
where the reference uses bicubic interpolation plus renormalisation.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mtnas.data.files import IdListDataset, image_size_of, read_image, read_png
from mtnas.errors import ConfigError, DataError

CONTEXT_SPLIT_DIR = Path("ImageSets") / "Context"
PARTS_LIST_DIR = Path("ImageSets") / "Parts"
IMAGE_DIR = "JPEGImages"
CONTEXT_LABELS = "pascal-context/trainval"  # default of `data.context_labels` (normals validity)
SEMSEG_SUBDIRS = ("VOC12", "pascal-context")  # looked up in this order, as the reference does
PARTS_SOURCE = "human_parts"
PERSON_CLASS = 15  # VOC / PASCAL-Part class index of `person`
IGNORE_PNG = 255
NUM_CONTEXT_CLASSES = 459
NORMAL_LENGTH_TOL = 0.25  # a decoded 8-bit normal this far from unit length is "off"
NORMAL_OFF_FRACTION = 0.05  # more off pixels than this: the file uses another encoding

# PASCAL-Part person part names → class, for 1, 4, 6 and 14 part classes (0 = background).
# Source: HUMAN_PART in SimonVandenhende/Multi-Task-Learning-PyTorch data/pascal_context.py (= brdav/atrc).
# fmt: off
HUMAN_PARTS: dict[int, dict[str, int]] = {
    1: {"hair": 1, "head": 1, "lear": 1, "lebrow": 1, "leye": 1, "lfoot": 1, "lhand": 1, "llarm": 1,
        "llleg": 1, "luarm": 1, "luleg": 1, "mouth": 1, "neck": 1, "nose": 1, "rear": 1, "rebrow": 1,
        "reye": 1, "rfoot": 1, "rhand": 1, "rlarm": 1, "rlleg": 1, "ruarm": 1, "ruleg": 1, "torso": 1},
    4: {"hair": 1, "head": 1, "lear": 1, "lebrow": 1, "leye": 1, "lfoot": 4, "lhand": 3, "llarm": 3,
        "llleg": 4, "luarm": 3, "luleg": 4, "mouth": 1, "neck": 2, "nose": 1, "rear": 1, "rebrow": 1,
        "reye": 1, "rfoot": 4, "rhand": 3, "rlarm": 3, "rlleg": 4, "ruarm": 3, "ruleg": 4, "torso": 2},
    6: {"hair": 1, "head": 1, "lear": 1, "lebrow": 1, "leye": 1, "lfoot": 6, "lhand": 4, "llarm": 4,
        "llleg": 6, "luarm": 3, "luleg": 5, "mouth": 1, "neck": 2, "nose": 1, "rear": 1, "rebrow": 1,
        "reye": 1, "rfoot": 6, "rhand": 4, "rlarm": 4, "rlleg": 6, "ruarm": 3, "ruleg": 5, "torso": 2},
    14: {"hair": 1, "head": 1, "lear": 1, "lebrow": 1, "leye": 1, "lfoot": 14, "lhand": 8, "llarm": 7,
         "llleg": 13, "luarm": 6, "luleg": 12, "mouth": 1, "neck": 2, "nose": 1, "rear": 1, "rebrow": 1,
         "reye": 1, "rfoot": 11, "rhand": 5, "rlarm": 4, "rlleg": 10, "ruarm": 3, "ruleg": 9, "torso": 2},
}
# fmt: on

# PASCAL-Context class ids (LabelMap values) where the distilled normals are valid: the reference builds the
# list at run time from db_info/nyu_classes.json and db_info/context_classes.json (MTI-Net repo) as "context
# classes whose name is an NYU class, except 'unknown'" plus 'tvmonitor' (427). These are the 170 ids that
# rule yields on those two files (computed once from them; the names are in the comment of each row).
NORMALS_VALID_CLASSES = frozenset(
    # air conditioner, antenna, ashtray, bag, ball, balloon, barrel, basket, bathtub, bed, bench, bicycle,
    [3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23]
    # blackboard, board, book, bottle, bowl, box, bracelet, brick, broom, bucket, cabinet, cake, calculator,
    + [29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49, 50]
    # calendar, camera, can, candle, car, cart, case, cat, cd, ceiling, cell phone, chair, chessboard, clock,
    + [51, 53, 55, 56, 59, 61, 62, 65, 66, 68, 69, 72, 73, 78]
    # coffee machine, comb, computer, cone, container, corkscrew, counter, crate, cup, curtain, cutting board,
    + [83, 84, 85, 87, 88, 95, 96, 101, 104, 105, 107]
    # dishwasher, dog, door, drum, duck, envelope, fan, faucet, fax machine, fire extinguisher, fish tank, flag,
    + [111, 113, 115, 122, 124, 135, 141, 142, 143, 146, 150, 154]
    # flashlight, floor, flower, fork, fruit, furnace, glass, globe, glove, guitar, hammer, handle, hanger, hat,
    + [157, 158, 159, 165, 172, 174, 181, 183, 184, 191, 193, 195, 197, 199]
    # heater, ipod, ironing board, jar, key, keyboard, knife, ladder, laptop, lid, light, light bulb, lock,
    + [202, 213, 215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238]
    # machine, map, mask, mattress, microphone, microwave, mirror, money, mouse, mouse pad, napkin, oven, pan,
    + [239, 242, 243, 246, 250, 251, 252, 255, 260, 261, 263, 269, 272]
    # paper, paper cutter, pen, pencil, person, photo, piano, picture, pig, pillow, pipe, pitcher, plant, plate,
    + [273, 275, 281, 283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295]
    # pool table, pot, printer, projector, radiator, radio, range hood, remote control, rope, rug, ruler,
    + [304, 307, 309, 310, 314, 315, 319, 323, 329, 330, 331]
    # scale, sculpture, sewing machine, shelves, shoe, shopping cart, shovel, sign, sink, sofa, spatula, speaker,
    + [336, 342, 345, 349, 350, 351, 352, 355, 357, 368, 370, 371]
    # spoon, stapler, stick, stool, stove, table, tape, telephone, tent, toaster, toilet, toothbrush, towel, toy,
    + [374, 379, 380, 383, 384, 397, 401, 403, 405, 407, 408, 411, 412, 413]
    # toy car, trampoline, tray, tricycle, trophy, tvmonitor, typewriter, umbrella, vacuum cleaner, wall,
    + [414, 417, 419, 421, 423, 427, 429, 430, 432, 440]
    # wallet, wardrobe, washing machine, watch, water dispenser, window, wire
    + [441, 442, 443, 444, 446, 454, 457]
)

_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)  # cv2.Laplacian, ksize=1
# Neighbour weights for the thinning lookup (bit i = neighbour i, counter-clockwise from east):
#   NW=8  N=4  NE=2
#   W=16   ·   E=1
#   SW=32 S=64 SE=128
_THIN_WEIGHTS = np.array([[8, 4, 2], [16, 0, 1], [32, 64, 128]], dtype=np.uint8)


@lru_cache(maxsize=1)
def _thin_luts() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two subiterations of Guo & Hall (Comm. ACM 32(3), 1989, algorithm A1), indexed
    by the 8-neighbourhood code above; the same conditions as scikit-image's `thin`."""
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    for code in range(256):
        x = [bool(code >> i & 1) for i in range(8)]  # x[0] = east, x[1] = north-east, …, x[7] = south-east
        # G1: exactly one 4-connected transition around the pixel (crossing number 1).
        crossings = sum(not x[i] and (x[i + 1] or x[(i + 2) % 8]) for i in (0, 2, 4, 6))
        # G2: 2 ≤ min(N1, N2) ≤ 3 (not an end point, not interior).
        n1 = sum(x[k - 1] or x[k] for k in (1, 3, 5, 7))
        n2 = sum(x[k] or x[(k + 1) % 8] for k in (1, 3, 5, 7))
        g12 = crossings == 1 and 2 <= min(n1, n2) <= 3
        # G3 (first subiteration) / G3' (second): remove only from one side per subiteration.
        first[code] = g12 and not ((x[1] or x[2] or not x[7]) and x[0])
        second[code] = g12 and not ((x[5] or x[6] or not x[3]) and x[4])
    return first, second


def thin(mask: np.ndarray) -> np.ndarray:
    """Thin a binary mask to one-pixel-wide, 8-connected curves (`skimage.morphology.thin`, no iteration
    limit): repeat both subiterations until no pixel is removed. Pixels outside the image count as 0."""
    from scipy import ndimage

    first, second = _thin_luts()
    skel = np.asarray(mask, dtype=bool).astype(np.uint8)
    count = -1
    while count != (count := int(skel.sum())):
        for lut in (first, second):
            codes = ndimage.correlate(skel, _THIN_WEIGHTS, mode="constant", cval=0)
            skel[lut[codes]] = 0
    return skel.astype(bool)


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """The reference's boundary map of a label image: thin(|Laplacian(labels)| > 0) as 0/1 uint8."""
    from scipy import ndimage

    lap = ndimage.correlate(labels.astype(np.float64), _LAPLACIAN, mode="mirror")
    return thin(np.abs(lap) > 0).astype(np.uint8)


def _loadmat(path: Path) -> dict[str, Any]:
    import scipy.io

    try:
        return scipy.io.loadmat(path)
    except FileNotFoundError:
        raise DataError(path, "file is missing.") from None
    except (ValueError, OSError, TypeError, NotImplementedError, IndexError) as e:
        raise DataError(path, f"not a readable .mat file ({e}).") from None


def _scalar(value: Any) -> Any:
    """The single element of a MATLAB scalar / string field as loaded by scipy (e.g. [[15]], ['hair'])."""
    arr = np.asarray(value).ravel()
    return arr[0] if arr.size else None


class PascalContextDataset(IdListDataset):
    """One split of PASCAL-Context in the multi-task layout (see the module docstring)."""

    resize_to_image_size = True
    split_dir = str(CONTEXT_SPLIT_DIR)
    layout_name = "PASCAL_MT"

    # --- configuration ----------------------------------------------------------------------------
    def _role(self, key: str) -> str:
        """Which decoder a target uses: semseg | parts | saliency | normal | edge."""
        t = self.targets[key]
        type_ = str(t.options.get("type", t.name))
        if t.kind == "semseg":
            return "parts" if Path(str(t.source)).name == PARTS_SOURCE else "semseg"
        if type_ in ("saliency", "normal", "edge"):
            return type_
        raise ConfigError(
            f"data.available_tasks.{key}.type",
            f"the pascal_context format provides semseg (source semseg or {PARTS_SOURCE}), saliency, normal "
            f"and edge targets; got type {type_!r}.",
        )

    def _parts_table(self, key: str) -> dict[str, int]:
        n = self.options.get("num_human_parts", 6)
        if n not in HUMAN_PARTS:
            raise ConfigError("data.num_human_parts", f"got {n!r}; expected one of {sorted(HUMAN_PARTS)}.")
        classes = self.targets[key].num_classes
        if classes is not None and classes != n + 1:
            raise ConfigError(
                f"data.available_tasks.{key}.num_classes",
                f"{n} human part classes + background = {n + 1} classes; got {classes}.",
            )
        return HUMAN_PARTS[n]

    def _normal_classes(self) -> frozenset[int]:
        """The built-in table, or the one the dataset's own json/ tables give (ATRC/InvPT packaging)."""
        nyu_file = self.root / "json" / "nyu_classes.json"
        ctx_file = self.root / "json" / "context_classes.json"
        if not (nyu_file.is_file() and ctx_file.is_file()):
            return NORMALS_VALID_CLASSES
        tables = []
        for path in (nyu_file, ctx_file):
            try:
                tables.append(json.loads(path.read_text()))
            except (OSError, ValueError) as e:
                raise DataError(path, f"not a readable JSON class table ({e}).") from None
        nyu, ctx = tables
        if not isinstance(ctx, dict) or "tvmonitor" not in ctx:
            raise DataError(ctx_file, "expected a JSON object {class name: id} with a 'tvmonitor' entry.")
        shared = {int(ctx[name]) for name in nyu if name in ctx and name != "unknown"}
        return frozenset(shared | {int(ctx["tvmonitor"])})

    # --- index ------------------------------------------------------------------------------------
    def _parts_list(self) -> dict[str, list[int]]:
        """`ImageSets/Parts/<split>.txt` (the reference's cache of object classes per image), if present."""
        path = self.root / PARTS_LIST_DIR / f"{self.split}.txt"
        if not path.is_file():
            return {}
        try:
            listing = json.loads(path.read_text())
            return {str(k): [int(c) for c in v] for k, v in listing.items()}
        except (OSError, ValueError, AttributeError, TypeError) as e:  # ValueError: bad JSON / text
            raise DataError(
                path,
                f"not the JSON {{image id: [object classes]}} the reference loaders write ({e}); delete it "
                "to decide from human_parts/*.mat instead.",
            ) from None

    def _listing(self, folder: Path, what: str) -> set[str]:
        if not folder.is_dir():
            raise DataError(folder, f"folder ({what}) is missing from the PASCAL-Context root.")
        with os.scandir(folder) as it:
            return {e.name for e in it}

    def index(self) -> list[dict[str, Any]]:
        ids = self.read_ids()
        self._roles = roles = {key: self._role(key) for key in self.targets if key != "image"}
        self._parts_of = {key: self._parts_table(key) for key, role in roles.items() if role == "parts"}
        valid = sorted(self._normal_classes()) if "normal" in roles.values() else []
        self._normal_valid = np.asarray(valid, dtype=np.int64)
        self._image_of: dict[Path, Path] = {}  # human-parts .mat → its image (size of an all-ignored map)
        self._has_person: dict[Path, bool] = {}  # from the Parts list; absent → read the .mat
        self._labels_of: dict[Path, Path] = {}  # normals .png → the LabelMap .mat deciding validity
        self._cache: tuple[Path, np.ndarray] | None = None  # last LabelMap read (normals + edge share it)
        parts_list = self._parts_list() if self._parts_of else {}

        # Per key: the (folder, suffix) places its file may be in, in order of preference.
        where: dict[str, list[tuple[Path, str]]] = {"image": [(self.root / IMAGE_DIR, ".jpg")]}
        labels_dir = self.root / str(self.options.get("context_labels") or CONTEXT_LABELS)
        for key, role in roles.items():
            src = self.root / str(self.targets[key].source)
            if role == "semseg":
                where[key] = [(src / sub, ".png") for sub in SEMSEG_SUBDIRS]
            elif role in ("parts", "edge"):
                where[key] = [(src, ".mat")]
            else:
                where[key] = [(src, ".png")]
            if role == "normal":  # the LabelMap deciding where normals are valid
                where[f"{key}:labels"] = [(labels_dir, ".mat")]
        listings: dict[Path, set[str]] = {}  # one directory listing per folder
        for key, places in where.items():
            semseg = roles.get(key) == "semseg"
            for folder, _ in places:
                if folder in listings:
                    continue
                if semseg and not folder.is_dir():  # either of VOC12/ and pascal-context/ may be absent
                    listings[folder] = set()
                    continue
                listings[folder] = self._listing(folder, key.replace(":labels", " LabelMap"))
            if semseg and not any(listings[f] for f, _ in places):
                raise DataError(
                    places[0][0].parent,
                    f"no semseg labels: neither {SEMSEG_SUBDIRS[0]}/ nor {SEMSEG_SUBDIRS[1]}/ holds PNG files.",
                )

        samples = []
        for id_ in ids:
            sample: dict[str, Any] = {"id": id_}
            missing = False
            for key, places in where.items():
                found = next((f / f"{id_}{s}" for f, s in places if f"{id_}{s}" in listings[f]), None)
                if found is None:
                    first = places[0][0] / f"{id_}{places[0][1]}"
                    nor = [str(f / f"{id_}{s}") for f, s in places[1:]]
                    self.index_problems.append(
                        f"{first}: file is missing" + (f" (nor {', '.join(nor)})." if nor else ".")
                    )
                    missing = True
                    continue
                sample[key] = found
            if missing:
                continue
            for key, role in roles.items():
                if role == "parts":
                    self._image_of[sample[key]] = sample["image"]
                    if id_ in parts_list:
                        self._has_person[sample[key]] = PERSON_CLASS in parts_list[id_]
                elif role == "normal":
                    self._labels_of[sample[key]] = sample.pop(f"{key}:labels")
            samples.append(sample)
        return samples

    # --- decode -----------------------------------------------------------------------------------
    def decode(self, key: str, ref: Path) -> np.ndarray:
        if key == "image":
            return read_image(ref)
        role = self._roles[key]
        if role == "semseg":
            return self._semseg(ref, read_png(ref), self.targets[key].num_classes or 21)
        if role == "parts":
            return self._parts(ref, self._parts_of[key])
        if role == "saliency":
            return self._saliency(ref, read_png(ref))
        if role == "normal":
            return self._normals(ref, read_png(ref), self._context_labels(self._labels_of[ref]))
        return label_boundaries(self._context_labels(ref))

    @staticmethod
    def _semseg(path: Path, raw: np.ndarray, num_classes: int) -> np.ndarray:
        if raw.ndim != 2:  # e.g. an RGB colour-coded label image: check_array names the shape
            return raw
        if not np.issubdtype(raw.dtype, np.integer):
            raise DataError(path, f"label dtype {raw.dtype}, expected an 8-bit class-index PNG.")
        labels = raw.astype(np.int64)
        ignore = labels == IGNORE_PNG
        bad = ~ignore & ((labels < 0) | (labels >= num_classes))
        if bad.any():
            raise DataError(
                path,
                f"label value {int(labels[bad].flat[0])} outside 0..{num_classes - 1} (0 = background) and "
                f"{IGNORE_PNG} (ignored); {int(bad.sum())} pixel(s).",
            )
        return np.where(ignore, -1, labels).astype(np.int16)

    def _parts(self, path: Path, table: dict[str, int]) -> np.ndarray:
        if self._has_person.get(path) is False:  # the Parts list says: no person in this image
            return np.full(image_size_of(self._image_of[path]), -1, dtype=np.int16)
        mat = _loadmat(path)
        try:
            objects = np.asarray(mat["anno"][0, 0]["objects"])
        except (KeyError, IndexError, ValueError, TypeError):
            raise DataError(
                path, "not a PASCAL-Part annotation: expected a struct `anno` with a field `objects`."
            ) from None
        target = None
        try:
            for obj in objects.ravel():
                parts = np.asarray(obj["parts"])
                if _scalar(obj["class_ind"]) != PERSON_CLASS or parts.size == 0:
                    continue
                if target is None:
                    target = np.zeros(np.asarray(obj["mask"]).shape, dtype=np.int16)
                for part in parts.ravel():
                    name = str(_scalar(part["part_name"]))
                    if name not in table:
                        raise DataError(
                            path, f"unknown person part {name!r}; expected one of {sorted(table)}."
                        )
                    mask = np.asarray(part["mask"]).astype(bool)
                    if mask.shape != target.shape:
                        raise DataError(path, f"part {name!r} mask {mask.shape} differs from {target.shape}.")
                    target[mask] = table[name]
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise DataError(
                path,
                f"not a PASCAL-Part annotation ({e}): objects need class_ind, mask and parts "
                "(part_name, mask).",
            ) from None
        if target is None or not target.any():  # no annotated person: the whole map is ignored
            return np.full(image_size_of(self._image_of[path]), -1, dtype=np.int16)
        return target

    @staticmethod
    def _saliency(path: Path, raw: np.ndarray) -> np.ndarray:
        if raw.dtype == bool:  # a 1-bit PNG
            return raw.astype(np.uint8)
        if raw.ndim != 2:
            return raw  # check_array names the shape
        if raw.dtype != np.uint8:
            raise DataError(path, f"dtype {raw.dtype}; this layout stores 8-bit maps (salient: v/255 > 0.5).")
        return (raw >= 128).astype(np.uint8)  # v/255 > 0.5 ⇔ v ≥ 128

    def _normals(self, path: Path, raw: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if raw.ndim != 3 or raw.shape[-1] != 3:
            return raw  # check_array names the shape
        if raw.dtype != np.uint8:
            raise DataError(
                path, f"dtype {raw.dtype}; this layout stores 8-bit RGB normals (n = 2·v/255 − 1)."
            )
        if labels.shape != raw.shape[:2]:
            raise DataError(path, f"size {raw.shape[:2]} differs from its LabelMap {labels.shape}.")
        n = 2.0 * raw.astype(np.float32) / 255.0 - 1.0
        valid = np.isin(labels, self._normal_valid)
        length = np.linalg.norm(n, axis=-1)
        off = valid & (np.abs(length - 1.0) > NORMAL_LENGTH_TOL)
        if valid.any() and off.sum() > NORMAL_OFF_FRACTION * valid.sum():
            raise DataError(
                path,
                f"{int(off.sum())} of {int(valid.sum())} valid normals have a length far from 1 (e.g. "
                f"{float(length[off].flat[0]):.3g}); expected unit vectors stored as v = (n + 1)·255/2.",
            )
        out = np.zeros_like(n)
        out[valid] = n[valid] / np.maximum(length[valid], 1e-6)[:, None]
        return out

    def _context_labels(self, path: Path) -> np.ndarray:
        """`LabelMap` of a PASCAL-Context .mat: H×W integer ids 0..459 (cached for the next target)."""
        if self._cache is not None and self._cache[0] == path:
            return self._cache[1]
        mat = _loadmat(path)
        if "LabelMap" not in mat:
            keys = sorted(k for k in mat if not k.startswith("__"))
            raise DataError(path, f"has no variable `LabelMap` (found {keys}).")
        labels = np.asarray(mat["LabelMap"])
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.number):
            raise DataError(
                path, f"LabelMap of shape {labels.shape} / dtype {labels.dtype}, expected H×W ids."
            )
        bad = (labels < 0) | (labels > NUM_CONTEXT_CLASSES) | (labels != np.round(labels))
        if bad.any():
            raise DataError(
                path,
                f"LabelMap value {float(labels[bad].flat[0]):g} outside the PASCAL-Context ids 0..{NUM_CONTEXT_CLASSES}.",
            )
        labels = labels.astype(np.int64)
        self._cache = (path, labels)
        return labels
