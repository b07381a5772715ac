"""NYUD-v2 in the multi-task layout of ASTMT / MTI-Net / ATRC / InvPT / MQTransformer (4 tasks, 40 classes).

One folder per target, one file per image, and split files listing image ids:

    root/gt_sets/<split>.txt        one image id per line: train.txt (795 ids), val.txt (654 ids)
    root/images/<id>.jpg|.png       8-bit RGB
    root/segmentation/<id>.png      single-channel 8-bit labels: 0 = unlabeled, 1..40 = the 40 NYU-40 classes
    root/depth/<id>.npy             float depth in metres, H×W (or H×W×1); 0 = invalid
    root/normals/<id>.npy|.png      .npy: float H×W×3 unit vectors, zero vector = invalid;
                                    .png: 8-bit RGB, n = 2·v/255 − 1
    root/edge/<id>.npy|.png         boundaries: .npy holds 0/1, .png holds 0/255

The folder names are the tasks' `source`s in `conf/data/nyud.yaml`. Three public packagings of this layout
exist and all are read; the file type is chosen per file by its extension:

* MTI-Net `NYUD_MT.tgz` (SimonVandenhende/Multi-Task-Learning-PyTorch, data/nyud.py): images .jpg,
  segmentation .png, depth/normals/edge .npy.
* ATRC / InvPT `NYUDv2.tar.gz` (brdav/atrc, src/data/nyud.py): images, segmentation, normals and edge .png,
  depth .npy; images are 425×560.
* ASTMT's original `NYUD_MT.tgz` (facebookresearch/astmt, fblib/dataloaders/nyud.py): segmentation and depth
  as .mat (keys `segmentation`, `depth`), normals .jpg, edge .png.

Conversions into the array convention of `mtnas.data.files` (all verified in the code named above):

* semseg: value 0 ("unlabeled"/background, which every 40-class paper ignores) → −1; k ∈ 1..40 → k − 1.
  Any other value (e.g. 255) is a `DataError` naming the file: it is no label of this layout.
* depth: metres as stored; 0 stays 0 (invalid). Integer arrays or values above `MAX_DEPTH_M` are refused:
  they mean another unit (e.g. millimetres), which would otherwise pass silently.
* normals: a zero vector is invalid (ASTMT/MTI-Net `AddIgnoreRegions`: norm 0 → ignore). 8-bit images
  cannot store an exact zero vector (0 decodes to −1, 255 to +1, grey to ±0.004), so a decoded vector
  shorter than 0.5 is read as invalid; the reference loaders would treat such a grey pixel as a (noisy)
  direction. Other vectors are rescaled to unit length, as the reference evaluations do; one whose
  length is far from 1 is a `DataError`, since it means another encoding (e.g. [0, 1] per channel).
* edge: 1 = boundary, 0 = not. NYUD has no ignore label for boundaries. Other values are a `DataError`
  (the reference losses threshold at 0.5, which would silently accept any encoding).

Images of different sizes (480×640 for MTI-Net, 425×560 for ATRC/InvPT) are resized to `data.image_size`
by the base class (bilinear for the image, nearest for targets), so metrics are computed at that size on
nearest-resampled labels, not at the original resolution as in the papers.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mtnas.data.files import IdListDataset, read_image, read_npy, read_png
from mtnas.errors import DataError

SPLIT_DIR = "gt_sets"
IMAGE_DIR = "images"
# File types each kind of target may come in, in order of preference when several exist for one id.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": (".jpg", ".png", ".jpeg"),
    "semseg": (".png", ".mat"),
    "depth": (".npy", ".mat"),
    "normal": (".npy", ".png", ".jpg"),
    "binary": (".npy", ".png"),
}
MAX_DEPTH_M = 20.0  # NYU's Kinect reads at most ~10 m; larger values mean another unit
NORMAL_INVALID_BELOW = 0.5  # decoded length below this: a stored zero vector (invalid)
NORMAL_LENGTH_TOL = {".npy": 0.1, ".png": 0.2, ".jpg": 0.3}  # 8-bit quantisation, JPEG artefacts


def _scan(folder: Path) -> dict[str, dict[str, str]]:
    """`{stem: {lower-case suffix: file name}}` for the files of one folder (one listing per folder)."""
    out: dict[str, dict[str, str]] = {}
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_file():
                stem, suffix = os.path.splitext(entry.name)
                out.setdefault(stem, {})[suffix.lower()] = entry.name
    return out


def _read_mat(path: Path, key: str) -> np.ndarray:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise DataError(path, "file is missing.") from None
    except (ValueError, OSError, TypeError, NotImplementedError) as e:
        raise DataError(path, f"not a readable .mat file ({e}).") from None
    if key not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(path, f"has no variable `{key}` (found {keys}).")
    return np.asarray(mat[key])


class NYUDDataset(IdListDataset):
    """One split of NYUD-v2 in the multi-task layout (see the module docstring)."""

    resize_to_image_size = True
    split_dir = SPLIT_DIR
    layout_name = "NYUD"

    # --- index ------------------------------------------------------------------------------------
    def index(self) -> list[dict[str, Any]]:
        ids = self.read_ids()
        folders = {"image": IMAGE_DIR, **{k: str(t.source) for k, t in self.targets.items() if k != "image"}}
        listings = {}
        for key, folder in folders.items():
            d = self.root / folder
            if not d.is_dir():
                raise DataError(d, f"folder `{folder}` ({key}) is missing from the NYUD root.")
            listings[key] = _scan(d)
        # The suffix most files of a folder use names a missing file in messages.
        usual = {}
        for key, listing in listings.items():
            counts = Counter(s for files in listing.values() for s in files if s in SUFFIXES[self.kinds[key]])
            usual[key] = counts.most_common(1)[0][0] if counts else SUFFIXES[self.kinds[key]][0]
        samples = []
        for id_ in ids:
            sample: dict[str, Any] = {"id": id_}
            for key, folder in folders.items():
                files = listings[key].get(id_, {})
                suffix = next((s for s in SUFFIXES[self.kinds[key]] if s in files), None)
                if suffix is None:
                    expected = self.root / folder / f"{id_}{usual[key]}"
                    other = [s for s in SUFFIXES[self.kinds[key]] if s != usual[key]]
                    self.index_problems.append(f"{expected}: file is missing (nor {'/'.join(other)}).")
                    continue
                sample[key] = self.root / folder / files[suffix]
            if len(sample) == len(folders) + 1:
                samples.append(sample)
        return samples

    # --- decode -----------------------------------------------------------------------------------
    def decode(self, key: str, ref: Path) -> np.ndarray:
        kind = self.kinds[key]
        suffix = ref.suffix.lower()
        if kind == "image":
            return read_image(ref)
        if kind == "semseg":
            raw = _read_mat(ref, "segmentation") if suffix == ".mat" else read_png(ref)
            return self._semseg(ref, raw, self.targets[key].num_classes or 40)
        if kind == "depth":
            raw = _read_mat(ref, "depth") if suffix == ".mat" else read_npy(ref)
            return self._depth(ref, raw)
        if kind == "normal":
            if suffix == ".npy":
                return self._normals(ref, read_npy(ref), NORMAL_LENGTH_TOL[".npy"])
            raw = read_png(ref, mode="RGB").astype(np.float32)
            return self._normals(ref, 2.0 * raw / 255.0 - 1.0, NORMAL_LENGTH_TOL.get(suffix, 0.3))
        if kind == "binary":
            return self._edge(ref, read_npy(ref) if suffix == ".npy" else read_png(ref))
        raise DataError(ref, f"the nyud format has no reader for {kind} targets (task {key}).")

    @staticmethod
    def _semseg(path: Path, raw: np.ndarray, num_classes: int) -> np.ndarray:
        if raw.ndim != 2:  # e.g. a colour-coded RGB label image: check_array names the shape
            return raw
        if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
            raise DataError(path, f"label dtype {raw.dtype}, expected integer class ids.")
        labels = raw.astype(np.int64) if np.issubdtype(raw.dtype, np.integer) else raw
        bad = (labels < 0) | (labels > num_classes) | (labels != np.round(labels))
        if bad.any():
            raise DataError(
                path,
                f"label value {float(labels[bad].flat[0]):g} outside 0 (unlabeled, ignored) and "
                f"1..{num_classes} (the classes); {int(bad.sum())} pixel(s).",
            )
        return (labels.astype(np.int16) - 1).astype(np.int16)  # 0 → −1 (ignore), k → k − 1

    @staticmethod
    def _depth(path: Path, raw: np.ndarray) -> np.ndarray:
        if raw.ndim == 2:
            raw = raw[..., None]
        if raw.ndim != 3 or raw.shape[-1] != 1:
            return raw  # check_array names the shape
        if not np.issubdtype(raw.dtype, np.floating):
            raise DataError(
                path, f"depth dtype {raw.dtype}; this layout stores float metres (integers suggest mm)."
            )
        finite = raw[np.isfinite(raw)]
        if finite.size and finite.max() > MAX_DEPTH_M:
            raise DataError(
                path,
                f"depth up to {finite.max():g}; this layout stores metres (NYU ≤ ~10 m), "
                "so these values are in another unit.",
            )
        return raw.astype(np.float32)

    @staticmethod
    def _normals(path: Path, raw: np.ndarray, tol: float) -> np.ndarray:
        if raw.ndim != 3 or raw.shape[-1] != 3 or not np.issubdtype(raw.dtype, np.number):
            return raw  # check_array names the shape / dtype
        n = raw.astype(np.float32)
        if not np.isfinite(n).all():
            return n  # check_array names NaN / inf
        length = np.linalg.norm(n, axis=-1)
        valid = length >= NORMAL_INVALID_BELOW
        off = valid & (np.abs(length - 1.0) > tol)
        if off.any():
            raise DataError(
                path,
                f"{int(off.sum())} normal(s) of length {float(length[off].flat[0]):.3g}; expected unit vectors "
                "(n = 2·v/255 − 1 for images) or a zero vector (invalid).",
            )
        out = np.zeros_like(n)
        out[valid] = n[valid] / length[valid][:, None]
        return out

    @staticmethod
    def _edge(path: Path, raw: np.ndarray) -> np.ndarray:
        on = 1 if path.suffix.lower() == ".npy" or raw.dtype == bool else 255  # bool: a 1-bit PNG
        if raw.dtype == bool:
            raw = raw.astype(np.uint8)
        if raw.ndim == 3 and raw.shape[-1] == 1:
            raw = raw[..., 0]
        if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.number):
            return raw  # check_array names the shape / dtype
        bad = (raw != 0) & (raw != on)
        if bad.any():
            raise DataError(
                path,
                f"edge value {float(raw[bad].flat[0]):g}; this layout stores 0 and {on} (boundary) only.",
            )
        return (raw == on).astype(np.uint8)
