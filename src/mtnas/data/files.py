"""The base every on-disk dataset format builds on: index the files, decode them, check them.

A format (one subclass of `FileDataset` per layout people download) answers two questions:

* `index()`: which samples does this split hold, and which file(s) hold each of its targets?
* `decode(key, ref)`: read one target of one sample into the *array convention* below.

Everything else is shared, so every format gets the same guarantees: the layout is indexed and the first
sample fully checked when a run starts; every sample is checked again when it is read (a file of the wrong
shape, dtype or value range is a `DataError` naming the file, never a silent wrong label); with
`skip_bad_samples=True` a bad sample is replaced by the next good one, with a warning and a running count;
and `mtnas-data check` runs the same checks on every file.

Array convention (channel-last numpy, before conversion to the batch convention of DESIGN.md §3):

    image       H×W×3 float in [0, 1]
    semseg      H×W integral classes 0..C−1, −1 = ignore            → (H, W) long
    depth       H×W×1 float ≥ 0, 0 = invalid                        → (1, H, W)
    normal      H×W×3 float unit vectors, 0 = invalid               → (3, H, W)
    binary      H×W in {0, 1, 255}, 255 = ignore (edges, saliency)  → (1, H, W)
    regression  H×W×C float, NaN = invalid                          → (C, H, W)
    distribution  C float ≥ 0, one per image (class probabilities;    → (C,)
                  all zero = unlabeled)
    vector      C float, one per image, NaN = invalid                 → (C,)
    boxes       N×5 float, one row per object: x1, y1, x2, y2 in       → {boxes (N, 4) float, labels (N,)
                pixels (x right, y down, corners of the pixel grid),      long}, the coordinates divided by
                and the class 0..C−1                                      the image's width and height

The two image-level kinds (`distribution`, `vector`) are not resized, cropped or flipped. Boxes are
normalised to [0, 1] when a sample is loaded, so resizing leaves them as they are; crops and flips move them
(`mtnas.data.transforms`); a box must lie inside its image, with positive width and height.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mtnas.errors import DataError

KINDS = ("image", "semseg", "depth", "normal", "binary", "regression", "distribution", "vector", "boxes")
# Kinds with an H×W extent (resized, cropped, flipped); the others hold one value set per image (boxes are
# coordinates: moved by crops and flips, never resampled).
SPATIAL = frozenset(KINDS) - {"distribution", "vector", "boxes"}
_FIXED_CHANNELS: dict[str, int | None] = {
    "image": 3,
    "semseg": None,
    "depth": 1,
    "normal": 3,
    "binary": None,
    "distribution": None,
    "vector": None,
    "boxes": 5,
}


@dataclass(frozen=True)
class Target:
    """One target a reader must produce: the task name, its array kind, where the reader finds it
    (`source`: a folder, a Taskonomy domain, … as the format defines) and what checks need."""

    name: str
    kind: str
    source: Any = None
    num_classes: int | None = None
    channels: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # the rest of the task's data spec

    @property
    def expected_channels(self) -> int | None:
        return self.channels if self.kind in ("regression", "vector") else _FIXED_CHANNELS[self.kind]


IMAGE = Target("image", "image")


def check_array(path: Any, arr: np.ndarray, target: Target, size: tuple[int, int] | None) -> list[str]:
    """Problems with one decoded array (empty = fine). Cheap: shape, dtype, finiteness."""
    if target.kind == "boxes":
        if arr.ndim != 2 or arr.shape[1] != 5:
            return [f"{path}: shape {tuple(arr.shape)}, expected N×5 boxes (x1, y1, x2, y2, class)"]
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            return [f"{path}: boxes must be finite numbers"]
        return []
    if target.kind in ("distribution", "vector"):
        n = target.num_classes if target.kind == "distribution" else target.channels
        what = "class scores" if target.kind == "distribution" else "values"
        if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
            return [f"{path}: shape {tuple(arr.shape)}, expected ({n if n is not None else 'C'},) {what}"]
        if not np.issubdtype(arr.dtype, np.number):
            return [f"{path}: dtype {arr.dtype}, expected numeric {what}"]
        finite = np.isfinite(arr) if target.kind == "distribution" else ~np.isinf(arr)  # NaN = invalid
        return [] if finite.all() else [f"{path}: non-finite {what}"]
    channels = target.expected_channels
    want_ndim = 2 if channels is None else 3
    if arr.ndim != want_ndim or (channels is not None and arr.shape[-1] != channels):
        want = "H×W" if channels is None else f"H×W×{channels}"
        return [f"{path}: shape {tuple(arr.shape)}, expected {want}"]
    problems = []
    if size is not None and tuple(arr.shape[:2]) != tuple(size):
        problems.append(f"{path}: size {tuple(arr.shape[:2])}, expected {tuple(size)} (data.image_size)")
    if not np.issubdtype(arr.dtype, np.number):
        return [*problems, f"{path}: dtype {arr.dtype}, expected a numeric array"]
    if target.kind == "image" and not np.issubdtype(arr.dtype, np.floating):
        problems.append(f"{path}: dtype {arr.dtype}, expected float RGB in [0, 1]")
    finite = np.isfinite(arr) if target.kind != "regression" else ~np.isinf(arr)
    if not finite.all():
        problems.append(f"{path}: contains {'inf' if target.kind == 'regression' else 'NaN or inf'}")
    return problems


def check_values(path: Any, arr: np.ndarray, target: Target) -> list[str]:
    """Problems with the values of a decoded array of the right shape (value ranges, label sets)."""
    kind, n = target.kind, target.num_classes
    if kind == "semseg" and n is not None:
        ok = (arr == -1) | ((arr >= 0) & (arr < n))
        if not ok.all():
            return [f"{path}: label value {float(arr[~ok].flat[0]):g} outside {{-1, 0..{n - 1}}}"]
        if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
            return [f"{path}: non-integral label {float(arr[arr != np.round(arr)].flat[0]):g}"]
    if kind == "distribution" and (arr < 0).any():
        return [f"{path}: negative class probability {float(arr[arr < 0].flat[0]):g}"]
    if kind == "distribution" and arr.any() and abs(float(arr.sum()) - 1) > 0.01:
        # Cross-entropy against soft targets assumes a distribution (all-zero = unlabeled).
        return [f"{path}: class probabilities sum to {float(arr.sum()):.4g}, expected 1"]
    if kind == "boxes" and len(arr):
        labels = arr[:, 4]
        bad = (labels != np.round(labels)) | (labels < 0) | (n is not None and labels >= n)
        if bad.any():
            return [f"{path}: box class {labels[bad][0]:g} outside 0..{(n or 0) - 1}"]
        thin = (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])
        if thin.any():
            return [f"{path}: box {arr[thin][0, :4].tolist()} has no area (expected x1 < x2, y1 < y2)"]
    if kind == "depth" and (arr < 0).any():
        return [f"{path}: negative depth (0 marks invalid pixels)"]
    if kind == "image" and (arr.min() < -1e-3 or arr.max() > 1 + 1e-3):
        return [f"{path}: image values in [{arr.min():.3g}, {arr.max():.3g}], expected [0, 1]"]
    if kind == "binary" and not np.isin(arr, (0, 1, 255)).all():
        return [f"{path}: values must be 0, 1 (or 255 = ignore)"]
    if kind == "normal":
        norm = np.linalg.norm(arr, axis=-1)
        if ((norm > 1e-3) & (np.abs(norm - 1) > 0.05)).any():
            return [f"{path}: normals must be unit vectors (or 0 = invalid); found length {norm.max():.3g}"]
    value_range = target.options.get("value_range")  # a layout's units, e.g. inverse depth, not metres
    if value_range is not None and arr.size and np.issubdtype(arr.dtype, np.number):
        lo, hi = (float(v) for v in value_range)
        values = arr[np.isfinite(arr)]
        if values.size and (values.min() < lo or values.max() > hi):
            return [
                f"{path}: values in [{values.min():.4g}, {values.max():.4g}], outside [{lo:g}, {hi:g}] "
                f"(`data.available_tasks.{target.name}.value_range`: the units this layout stores)"
            ]
    return []


def boxes_outside(arr: np.ndarray, size: tuple[int, int], tolerance: float = 0.5) -> np.ndarray:
    """Rows of an N×5 box array that leave an image of `size` (H, W) by more than `tolerance` pixels."""
    h, w = size
    return (
        (arr[:, 0] < -tolerance)
        | (arr[:, 1] < -tolerance)
        | (arr[:, 2] > w + tolerance)
        | (arr[:, 3] > h + tolerance)
    )


def instance_boxes(instances: np.ndarray, classes: Mapping[int, int], min_pixels: int = 1) -> np.ndarray:
    """N×5 boxes (x1, y1, x2, y2 on pixel corners, class) of the instances in an H×W id map: one per id in
    `classes` (id → class) with at least `min_pixels` pixels, spanning its pixels; in id order."""
    from scipy import ndimage

    ids = np.array(sorted(i for i in np.unique(instances) if int(i) in classes), dtype=instances.dtype)
    if not len(ids):
        return np.zeros((0, 5), dtype=np.float32)
    position = np.searchsorted(ids, instances)
    found = ids[np.minimum(position, len(ids) - 1)] == instances
    compact = np.where(found, position + 1, 0)  # 1..K for the instances, 0 elsewhere
    counts = np.bincount(compact.ravel(), minlength=len(ids) + 1)
    rows = [
        [sx.start, sy.start, sx.stop, sy.stop, classes[int(i)]]
        for k, (i, (sy, sx)) in enumerate(zip(ids, ndimage.find_objects(compact), strict=True))
        if counts[k + 1] >= min_pixels
    ]
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


def boxes_target(arr: np.ndarray, size: tuple[int, int]) -> dict[str, Tensor]:
    """An N×5 pixel box array as the batch convention: boxes normalised by the image's (H, W), clipped to it."""
    h, w = size
    boxes = torch.from_numpy(np.asarray(arr[:, :4], dtype=np.float32)).reshape(-1, 4)
    boxes = (boxes / torch.tensor([w, h, w, h], dtype=torch.float32)).clamp(0, 1)
    return {"boxes": boxes, "labels": torch.from_numpy(np.asarray(arr[:, 4])).round().long().reshape(-1)}


def to_tensor(arr: np.ndarray, kind: str) -> Tensor:
    if kind == "semseg":
        return torch.from_numpy(np.asarray(arr)).round().long()
    t = torch.from_numpy(np.asarray(arr, dtype=np.float32))
    if kind in ("distribution", "vector"):
        return t
    if t.ndim == 2:
        return t[None]
    return t.permute(2, 0, 1).contiguous()


def resize(x: Tensor, size: tuple[int, int], kind: str) -> Tensor:
    """Resize one channel-first sample entry. Bilinear for images; nearest for every target, because
    interpolating would blend labels and mix invalid pixels into depth, normals and regression maps."""
    if kind not in SPATIAL or tuple(x.shape[-2:]) == tuple(size):
        return x
    if kind == "image":
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
    if kind == "semseg":
        return F.interpolate(x[None, None].float(), size=size, mode="nearest")[0, 0].to(x.dtype)
    return F.interpolate(x[None], size=size, mode="nearest")[0]


class FileDataset(Dataset, ABC):
    """One split of a dataset in some on-disk format. Samples are `dict[str, Tensor]` with `image` and one
    entry per target, in the batch convention.

    Subclasses implement `index` and `decode`; `check_split` lets a format report split-level problems
    (split file sizes, …) to `mtnas-data check`. `resize_to_image_size`: formats whose images come in
    several sizes (PASCAL, Cityscapes, Taskonomy) are resized to `image_size`; preprocessed fixed-size
    formats are checked to already have it.
    """

    resize_to_image_size: ClassVar[bool] = True

    def __init__(
        self,
        root: str | Path,
        split: str,
        targets: Mapping[str, Target],
        image_size: tuple[int, int] | None = None,
        transform: Callable | None = None,
        skip_bad_samples: bool = False,
        options: Mapping[str, Any] | None = None,
        strict: bool = True,
    ):
        self.root = Path(root).expanduser()
        self.split = split
        self.targets = {"image": IMAGE, **dict(targets)}
        self.image_size = tuple(int(s) for s in image_size) if image_size else None
        self.transform = transform
        self.skip_bad_samples = skip_bad_samples
        self.options = dict(options or {})
        self.kinds = {key: t.kind for key, t in self.targets.items()}
        self.num_skipped = 0
        if not self.root.is_dir():
            raise DataError(self.root, "dataset root does not exist (set `data.root`).")
        # Layout problems: samples whose files are missing are dropped from the index and reported.
        self.index_problems: list[str] = []
        self.samples: list[dict[str, Any]] = self.index()
        if strict:
            self._start_up_check()

    # --- what a format implements -------------------------------------------------------------
    @abstractmethod
    def index(self) -> list[dict[str, Any]]:
        """One dict per sample: `id` (a short name for messages) and, per key of `self.targets`, whatever
        `decode` needs to find that target (usually a `Path`). Raise `DataError` when the split as a whole
        is unusable; append to `self.index_problems` for single samples with missing files (and leave them
        out)."""

    @abstractmethod
    def decode(self, key: str, ref: Any) -> np.ndarray:
        """Read target `key` (or `image`) from `ref` into the array convention of the module docstring.
        Raise `DataError` naming the file when it cannot be read."""

    # --- shared machinery -----------------------------------------------------------------------
    def _start_up_check(self) -> None:
        if self.index_problems and not self.skip_bad_samples:
            raise DataError(
                self.index_problems[0].split(": ", 1)[0],
                self.index_problems[0].split(": ", 1)[-1]
                + f" ({len(self.index_problems)} problem(s) in the {self.split} split; "
                "`mtnas-data check` lists them, `data.skip_bad_samples=true` skips such samples).",
            )
        if self.index_problems:
            warnings.warn(
                f"{self.root} [{self.split}]: skipping {len(self.index_problems)} sample(s) with missing "
                f"files (data.skip_bad_samples=true), e.g. {self.index_problems[0]}",
                stacklevel=2,
            )
        if not self.samples:
            raise DataError(self.root, f"the {self.split} split has no samples.")
        # Cheap check of one whole sample, so a wrong layout fails now rather than mid-epoch.
        if not self.skip_bad_samples:
            self.load_arrays(0)  # raises the DataError naming the bad file

    def __len__(self) -> int:
        return len(self.samples)

    def sample_id(self, index: int) -> str:
        return str(self.samples[index].get("id", index))

    def load_arrays(self, index: int) -> dict[str, np.ndarray]:
        """Decode and fully check one sample; `DataError` names the first bad file."""
        sample = self.samples[index]
        size = None if self.resize_to_image_size else self.image_size
        arrays = {}
        for key, target in self.targets.items():
            ref = sample[key]
            arr = self.decode(key, ref)
            problems = check_array(ref, arr, target, size)
            if problems:
                raise DataError(ref, problems[0].split(": ", 1)[1])
            arrays[key] = arr
        arrays = self.finish(sample, arrays)
        for key, target in self.targets.items():
            problems = check_values(sample[key], arrays[key], target)
            if problems:
                raise DataError(sample[key], problems[0].split(": ", 1)[1])
            if target.kind == "boxes" and len(arrays[key]):
                outside = boxes_outside(arrays[key], arrays["image"].shape[:2])
                if outside.any():
                    raise DataError(
                        sample[key],
                        f"box {arrays[key][outside][0, :4].tolist()} lies outside the "
                        f"{arrays['image'].shape[1]}×{arrays['image'].shape[0]} image (x1, y1, x2, y2 in pixels)",
                    )
        shapes = {k: a.shape[:2] for k, a in arrays.items() if self.kinds[k] in SPATIAL}
        if len(set(shapes.values())) > 1:
            # Blame the file that disagrees with the others (the image when all targets agree, a target
            # when it alone differs); on a tie the image's size counts as right.
            votes = Counter(shapes.values())
            common = max(votes, key=lambda s: (votes[s], s == shapes["image"]))
            odd = next(k for k, s in shapes.items() if s != common)
            others = ", ".join(k for k, s in shapes.items() if s == common)
            raise DataError(
                sample[odd],
                f"size {tuple(shapes[odd])}, but {others} of sample {self.sample_id(index)} are "
                f"{tuple(common)} (sizes differ)",
            )
        return arrays

    def finish(self, sample: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Adjust one sample's decoded arrays together before their values are checked (align target sizes
        to the image, masks one target imposes on others, …). Default: unchanged."""
        return arrays

    def check_sample(self, index: int) -> list[str]:
        try:
            self.load_arrays(index)
        except DataError as e:
            return [str(e)]
        return []

    def check_split(self) -> list[str]:
        """Split-level problems beyond missing files (override to check e.g. expected split sizes)."""
        return []

    def load(self, index: int) -> dict[str, Tensor]:
        arrays = self.load_arrays(index)
        size = arrays["image"].shape[:2]
        sample = {
            k: boxes_target(a, size) if self.kinds[k] == "boxes" else to_tensor(a, self.kinds[k])
            for k, a in arrays.items()
        }
        if self.resize_to_image_size and self.image_size is not None:
            sample = {k: resize(x, self.image_size, self.kinds[k]) for k, x in sample.items()}
        return sample

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                sample = self.load(i)
            except DataError as e:
                if not self.skip_bad_samples:
                    raise
                self.num_skipped += 1
                warnings.warn(
                    f"skipped bad sample ({e}); {self.num_skipped} skipped so far in this process "
                    "(data.skip_bad_samples=true)",
                    stacklevel=2,
                )
                continue
            return self.transform(sample, self.kinds, index=index) if self.transform is not None else sample
        raise DataError(self.root, f"no readable sample in the {self.split} split.")


class IdListDataset(FileDataset):
    """A format whose splits are text files of sample ids, one per line (`<split_dir>/<split>.txt`), as in
    the NYUD and PASCAL-Context multi-task layouts. Adds the split-file reading and its checks: ids listed
    twice, and evaluation ids that are also training ids."""

    split_dir: ClassVar[str]
    layout_name: ClassVar[str]  # for the hint when the split folder is empty (e.g. "NYUD")

    def split_file(self, split: str | None = None) -> Path:
        return self.root / self.split_dir / f"{split or self.split}.txt"

    def read_ids(self, split: str | None = None) -> list[str]:
        path = self.split_file(split)
        if not path.is_file():
            have = sorted(p.name for p in path.parent.glob("*.txt"))
            hint = (
                f"; {self.split_dir}/ has {have}"
                if have
                else f" — is {self.root} the {self.layout_name} folder?"
            )
            end = "" if hint.endswith("?") else "."
            raise DataError(path, f"split file is missing (one image id per line expected){hint}{end}")
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(path, f"split file is unreadable ({e}).") from None
        ids = [line.strip() for line in lines if line.strip()]
        if not ids:
            raise DataError(path, "split file lists no image ids.")
        return ids

    def check_split(self) -> list[str]:
        from collections import Counter

        ids = self.read_ids()
        path = self.split_file()
        problems = [f"{path}: id {i!r} is listed {n} times." for i, n in Counter(ids).items() if n > 1]
        train = str((self.options.get("splits") or {}).get("train") or "train")
        if self.split != train and self.split_file(train).is_file():
            overlap = sorted(set(ids) & set(self.read_ids(train)))
            if overlap:
                problems.append(
                    f"{path}: {len(overlap)} id(s) also in {train}.txt (e.g. {overlap[0]!r}); "
                    "evaluation images must not be trained on."
                )
        return problems


def image_size_of(path: Path) -> tuple[int, int]:
    """(H, W) from an image file's header, without decoding it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except FileNotFoundError:
        raise DataError(path, "file is missing.") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(path, f"not a readable image ({e}).") from None


def read_image(path: Path) -> np.ndarray:
    """An 8-bit RGB image file as H×W×3 float in [0, 1]."""
    return read_png(path, mode="RGB").astype(np.float32) / 255.0


def read_png(path: Path, mode: str | None = None) -> np.ndarray:
    """Any PIL-readable image as a numpy array, keeping 16-bit PNGs 16-bit (mode "I;16" → uint16).
    `mode` converts (e.g. "RGB"); `DataError` names the file when it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            arr = np.array(im)
    except FileNotFoundError:
        raise DataError(path, "file is missing.") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(path, f"not a readable image ({e}).") from None
    return arr


def read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(path, "file is missing.") from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(path, f"not a readable .npy array ({e}).") from None
