"""Cityscapes in its official layout (the `leftImg8bit_trainvaltest`, `gtFine_trainvaltest`,
`disparity_trainvaltest` and `camera_trainvaltest` packages, unzipped into one root):

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png   8-bit RGB, 1024×2048
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png    8-bit, official label ids 0..33
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png 16-bit; labelId · 1000 + k for
                                                                       instance k of a class with instances,
                                                                       the plain labelId elsewhere (crowds)
    disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png       16-bit; p > 0: d = (p − 1) / 256 px,
                                                                       p = 0: invalid
    camera/<split>/<city>/<city>_<seq>_<frame>_camera.json            {"extrinsic": {"baseline": m, …},
                                                                       "intrinsic": {"fx": px, …}, …}

(layout, file names and the disparity encoding: the README of mcordts/cityscapesScripts; the camera keys:
public readers of `*_camera.json`, e.g. depth-from-disparity code that reads `extrinsic.baseline` and
`intrinsic.fx`). The official test split has no public labels, so val doubles as test.

Targets (`source` of a task in the data config):

* semseg `category`: the 7 Cityscapes categories (flat, construction, object, nature, sky, human, vehicle)
  = categoryId − 1; the void category (categoryId 0) → −1 (ignore). Labels that the official benchmark
  marks `ignoreInEval` but that belong to a real category (parking, rail track, guard rail, bridge, tunnel,
  polegroup, caravan, trailer) keep their category, as the labelId → categoryId mapping says.
* semseg `trainId`: the 19 official training classes; trainId 255 (ignore) → −1.
* detection `instanceIds`: one box per instance (the extent of its pixels) of the 8 classes the official
  instance benchmark evaluates — person, rider, car, truck, bus, train, motorcycle, bicycle, as classes 0..7;
  crowd regions (plain label ids, no instance number) and caravan/trailer get no box.
* depth `disparity`: **metric depth in metres**, baseline · fx / d from the 16-bit disparity; d = 0 (p = 0
  invalid, or p = 1, i.e. zero disparity / infinite depth) and depth beyond `max_depth` → 0 (invalid).
  Unlike the preprocessed `.npy` layout (`conf/data/cityscapes.yaml`, inverse depth), these are metres.

A label id outside the official table (e.g. a `_color.png` or a `_labelTrainIds.png` passed by mistake, or a
corrupt file) is a `DataError` naming the file, never a silent wrong class.

Options (`data.cityscapes` in the data config):

    calibration: auto | camera | fixed   auto: per-image camera/*.json when camera/<split> exists, else the
                                          fixed values below (with a warning); camera: require the json files;
                                          fixed: use `baseline` and `fx` for every image
    baseline: 0.209313                    metres; fx: 2262.52 pixels (at 2048 width) — typical values seen in
                                          public code; each image's own camera file differs slightly
    max_depth: 80.0                       metres; farther pixels are marked invalid (null keeps all)

Images are resized to `data.image_size` by the base class (bilinear for the image, nearest for labels and
depth). Resizing does not change metric depth, so depth metrics are in metres at any resolution; labels and
metrics are those of the nearest-downsampled maps (as in the MTAN-style preprocessing), not the full-res
official evaluation.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mtnas.data.files import FileDataset, image_size_of, instance_boxes, read_image, read_png
from mtnas.errors import ConfigError, DataError

# (name, labelId, trainId, categoryId) — every label of cityscapesScripts/helpers/labels.py
# (mcordts/cityscapesScripts) with a labelId ≥ 0. trainId 255 = ignore; categoryId 0 = void.
# 'license plate' (labelId −1, trainId −1, vehicle) is left out: id −1 is never stored in labelIds PNGs.
LABELS: tuple[tuple[str, int, int, int], ...] = (
    ("unlabeled", 0, 255, 0),
    ("ego vehicle", 1, 255, 0),
    ("rectification border", 2, 255, 0),
    ("out of roi", 3, 255, 0),
    ("static", 4, 255, 0),
    ("dynamic", 5, 255, 0),
    ("ground", 6, 255, 0),
    ("road", 7, 0, 1),
    ("sidewalk", 8, 1, 1),
    ("parking", 9, 255, 1),
    ("rail track", 10, 255, 1),
    ("building", 11, 2, 2),
    ("wall", 12, 3, 2),
    ("fence", 13, 4, 2),
    ("guard rail", 14, 255, 2),
    ("bridge", 15, 255, 2),
    ("tunnel", 16, 255, 2),
    ("pole", 17, 5, 3),
    ("polegroup", 18, 255, 3),
    ("traffic light", 19, 6, 3),
    ("traffic sign", 20, 7, 3),
    ("vegetation", 21, 8, 4),
    ("terrain", 22, 9, 4),
    ("sky", 23, 10, 5),
    ("person", 24, 11, 6),
    ("rider", 25, 12, 6),
    ("car", 26, 13, 7),
    ("truck", 27, 14, 7),
    ("bus", 28, 15, 7),
    ("caravan", 29, 255, 7),
    ("trailer", 30, 255, 7),
    ("train", 31, 16, 7),
    ("motorcycle", 32, 17, 7),
    ("bicycle", 33, 18, 7),
)
CATEGORIES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")  # categoryId 1..7
TRAIN_CLASSES = tuple(name for name, _, train_id, _ in sorted(LABELS, key=lambda r: r[2]) if train_id != 255)

_UNDEFINED = -2  # marks label ids that are not in the table


def _lut(column: int) -> np.ndarray:
    """labelId (0..255) → class (0..C−1), −1 ignore, `_UNDEFINED` for ids not in the table."""
    lut = np.full(256, _UNDEFINED, dtype=np.int64)
    for row in LABELS:
        value = row[column]
        if column == 2:  # trainId
            lut[row[1]] = -1 if value == 255 else value
        else:  # categoryId: void (0) → ignore
            lut[row[1]] = value - 1
    return lut


LUTS = {"trainId": _lut(2), "category": _lut(3)}
NUM_CLASSES = {"trainId": 19, "category": 7}
# The classes with instances that the official instance-level benchmark evaluates (labelId → box class).
INSTANCE_CLASSES = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
BOX_CLASS = {
    label_id: INSTANCE_CLASSES.index(name) for name, label_id, _, _ in LABELS if name in INSTANCE_CLASSES
}
SOURCES = {"semseg": tuple(LUTS), "depth": ("disparity",), "boxes": ("instanceIds",)}
CALIBRATIONS = ("auto", "camera", "fixed")
DEFAULTS = {"calibration": "auto", "baseline": 0.209313, "fx": 2262.52, "max_depth": 80.0}

_IMAGE_SUFFIX = "_leftImg8bit.png"
_SUFFIX = {"semseg": "_gtFine_labelIds.png", "depth": "_disparity.png", "boxes": "_gtFine_instanceIds.png"}
_FOLDER = {"semseg": "gtFine", "depth": "disparity", "boxes": "gtFine"}


def disparity_to_depth(raw: np.ndarray, baseline: float, fx: float, max_depth: float | None) -> np.ndarray:
    """16-bit Cityscapes disparity PNG values → H×W×1 float32 metric depth, 0 = invalid.

    p > 0: d = (p − 1) / 256 pixels; p = 0 is invalid, and p = 1 (d = 0, infinitely far) is invalid too.
    depth = baseline · fx / d; with `max_depth`, farther pixels are invalid."""
    disparity = np.where(raw > 0, (raw.astype(np.float64) - 1.0) / 256.0, 0.0)
    depth = np.zeros(raw.shape, dtype=np.float64)
    valid = disparity > 0
    depth[valid] = baseline * fx / disparity[valid]
    if max_depth is not None:
        depth[depth > max_depth] = 0.0
    return depth.astype(np.float32)[..., None]


class CityscapesDataset(FileDataset):
    resize_to_image_size = True  # 1024×2048 → data.image_size (e.g. 128×256)

    # --- configuration ------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        given = self.options.get("cityscapes") or {}
        unknown = sorted(set(given) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"data.cityscapes.{unknown[0]}", f"unknown option; known: {sorted(DEFAULTS)}.")
        s = {**DEFAULTS, **dict(given)}
        if s["calibration"] not in CALIBRATIONS:
            raise ConfigError(
                "data.cityscapes.calibration", f"got {s['calibration']!r}; expected one of {CALIBRATIONS}."
            )
        for key in ("baseline", "fx", "max_depth"):
            value = s[key]
            if value is None and key == "max_depth":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"data.cityscapes.{key}", f"got {value!r}; expected a positive number.")
        return s

    def _check_targets(self) -> None:
        for key, t in self.targets.items():
            if key == "image":
                continue
            where = f"data.available_tasks.{key}"
            if t.kind not in SOURCES:
                raise ConfigError(
                    f"{where}.type",
                    f"Cityscapes provides semseg, depth and detection targets, not {t.kind!r}.",
                )
            if t.source not in SOURCES[t.kind]:
                raise ConfigError(
                    f"{where}.source", f"got {t.source!r}; a {t.kind} target reads one of {SOURCES[t.kind]}."
                )
            if t.kind == "semseg" and t.num_classes != NUM_CLASSES[t.source]:
                raise ConfigError(
                    f"{where}.num_classes",
                    f"source {t.source!r} has {NUM_CLASSES[t.source]} classes; got {t.num_classes!r}.",
                )
            if t.kind == "boxes" and t.num_classes != len(INSTANCE_CLASSES):
                raise ConfigError(
                    f"{where}.num_classes",
                    f"Cityscapes boxes have {len(INSTANCE_CLASSES)} classes {INSTANCE_CLASSES}; "
                    f"got {t.num_classes!r}.",
                )

    # --- the format ---------------------------------------------------------------------------
    def index(self) -> list[dict[str, Any]]:
        self._check_targets()
        self.settings = self._settings()
        image_dir = self.root / "leftImg8bit" / self.split
        if not image_dir.is_dir():
            raise DataError(
                image_dir,
                f"split folder is missing (expected leftImg8bit/{self.split}/<city>/*{_IMAGE_SUFFIX}).",
            )
        images = sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
        if not images:
            raise DataError(image_dir, f"no `<city>/<city>_<seq>_<frame>{_IMAGE_SUFFIX}` files.")
        kinds = {t.kind for k, t in self.targets.items() if k != "image"}
        for kind in sorted(kinds):
            folder = self.root / _FOLDER[kind] / self.split
            if not folder.is_dir():
                raise DataError(folder, f"split folder is missing (needed for the {kind} target).")
        camera_dir = self.root / "camera" / self.split
        self.per_image_camera = False
        if "depth" in kinds:
            mode = self.settings["calibration"]
            if mode == "camera" and not camera_dir.is_dir():
                raise DataError(
                    camera_dir,
                    "split folder is missing (data.cityscapes.calibration=camera needs the per-image "
                    "*_camera.json files; `fixed` uses data.cityscapes.baseline and fx instead).",
                )
            self.per_image_camera = mode == "camera" or (mode == "auto" and camera_dir.is_dir())
            if mode == "auto" and not self.per_image_camera:
                warnings.warn(
                    f"{camera_dir} is missing: metric depth uses data.cityscapes.baseline="
                    f"{self.settings['baseline']} m and fx={self.settings['fx']} px for every image "
                    "(per-image calibration differs slightly; set data.cityscapes.calibration=fixed to "
                    "silence this).",
                    stacklevel=2,
                )
        # For messages and size checks: which image a target file belongs to, and its camera file.
        self.image_of: dict[Path, Path] = {}
        self.camera_of: dict[Path, Path] = {}
        samples = []
        for image in images:
            city = image.parent.name
            stem = image.name[: -len(_IMAGE_SUFFIX)]
            sample: dict[str, Any] = {"id": f"{self.split}/{city}/{stem}", "image": image}
            files = []
            for key, t in self.targets.items():
                if key == "image":
                    continue
                path = self.root / _FOLDER[t.kind] / self.split / city / f"{stem}{_SUFFIX[t.kind]}"
                sample[key] = path
                files.append(path)
                self.image_of[path] = image
                if t.kind == "depth" and self.per_image_camera:
                    camera = camera_dir / city / f"{stem}_camera.json"
                    self.camera_of[path] = camera
                    files.append(camera)
            missing = [f for f in dict.fromkeys(files) if not f.is_file()]
            if missing:
                self.index_problems += [f"{f}: file is missing." for f in missing]
                continue
            samples.append(sample)
        return samples

    def decode(self, key: str, ref: Path) -> np.ndarray:
        if key == "image":
            return read_image(ref)
        target = self.targets[key]
        raw = read_png(ref)
        expected = image_size_of(self.image_of[ref]) if ref in self.image_of else None
        if expected is not None and tuple(raw.shape[:2]) != expected:
            raise DataError(
                ref,
                f"size {tuple(raw.shape[:2])} differs from its image {self.image_of[ref].name} {expected}.",
            )
        if target.kind == "semseg":
            return self._decode_labels(ref, raw, target.source)
        if target.kind == "boxes":
            return self._decode_instances(ref, raw)
        return self._decode_disparity(ref, raw)

    def _decode_instances(self, ref: Path, raw: np.ndarray) -> np.ndarray:
        if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
            raise DataError(
                ref,
                f"expected a single-channel integer instanceIds PNG, got {raw.dtype} with shape {raw.shape}.",
            )
        ids = np.unique(raw).astype(np.int64)
        label_ids = np.where(ids >= 1000, ids // 1000, ids)
        undefined = (label_ids > 255) | (LUTS["category"][np.minimum(label_ids, 255)] == _UNDEFINED)
        if undefined.any():
            raise DataError(
                ref,
                f"id {int(ids[undefined][0])} is neither a label id (0–33) nor labelId · 1000 + instance number.",
            )
        instances = {int(i): BOX_CLASS[int(i) // 1000] for i in ids if i >= 1000 and i // 1000 in BOX_CLASS}
        return instance_boxes(raw, instances)

    def _decode_labels(self, ref: Path, raw: np.ndarray, source: str) -> np.ndarray:
        if raw.ndim != 2 or raw.dtype != np.uint8:
            raise DataError(
                ref,
                f"expected an 8-bit single-channel labelIds PNG, got {raw.dtype} with shape {raw.shape} "
                "(is this a *_color.png?).",
            )
        labels = LUTS[source][raw]
        bad = labels == _UNDEFINED
        if bad.any():
            raise DataError(
                ref, f"label id {int(raw[bad].flat[0])} is not a Cityscapes label id (0–33, labels.py)."
            )
        return labels

    def _decode_disparity(self, ref: Path, raw: np.ndarray) -> np.ndarray:
        # PIL reads 16-bit PNGs as mode "I;16" (uint16); older versions as "I" (int32).
        sixteen_bit = raw.dtype == np.uint16 or (
            raw.dtype == np.int32 and raw.min() >= 0 and raw.max() < 2**16
        )
        if raw.ndim != 2 or not sixteen_bit:
            raise DataError(
                ref,
                f"expected a 16-bit single-channel disparity PNG, got {raw.dtype} with shape {raw.shape}.",
            )
        baseline, fx = self._calibration(ref)
        return disparity_to_depth(raw, baseline, fx, self.settings["max_depth"])

    def _calibration(self, ref: Path) -> tuple[float, float]:
        if not self.per_image_camera:
            return float(self.settings["baseline"]), float(self.settings["fx"])
        path = self.camera_of[ref]
        try:
            camera = json.loads(path.read_text())
            baseline, fx = camera["extrinsic"]["baseline"], camera["intrinsic"]["fx"]
        except FileNotFoundError:
            raise DataError(path, "file is missing.") from None
        except (OSError, ValueError) as e:
            raise DataError(path, f"not a readable JSON file ({e}).") from None
        except (KeyError, TypeError):
            raise DataError(
                path, 'expected {"extrinsic": {"baseline": …}, "intrinsic": {"fx": …}}.'
            ) from None
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in (baseline, fx)):
            raise DataError(path, f"baseline {baseline!r} and fx {fx!r} must be positive numbers.")
        return float(baseline), float(fx)

    def check_split(self) -> list[str]:
        """Label / disparity files without a matching image (a partly copied or renamed download)."""
        problems = []
        for kind in sorted({t.kind for k, t in self.targets.items() if k != "image"}):
            folder = self.root / _FOLDER[kind] / self.split
            for path in sorted(folder.glob(f"*/*{_SUFFIX[kind]}")):
                stem = path.name[: -len(_SUFFIX[kind])]
                image = self.root / "leftImg8bit" / self.split / path.parent.name / f"{stem}{_IMAGE_SUFFIX}"
                if not image.is_file():
                    problems.append(
                        f"{path}: no matching image leftImg8bit/{self.split}/{path.parent.name}/{image.name}."
                    )
        return problems
