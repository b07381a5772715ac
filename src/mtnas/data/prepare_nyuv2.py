"""`mtnas-data prepare nyuv2`: the official labeled NYUv2 `.mat` → the preprocessed `.npy` layout.

Input (all from the NYU Depth v2 site and the usual meta-data repositories; nothing is downloaded):

    nyu_depth_v2_labeled.mat   MATLAB v7.3 (HDF5). h5py sees MATLAB's column-major arrays transposed:
                               images (N, 3, W, H) uint8 RGB, depths / rawDepths (N, W, H) float metres,
                               labels (N, W, H) uint16 with 0 = unlabeled and 1..894 = index into `names`
                               (N = 1449, H×W = 480×640). Checked against public converters, e.g.
                               lidongyv/Monocular-depth-esitimation-with-region-support-cvpr nyu1_data.py
                               (`images[i].transpose(2, 1, 0)`, `depths[i].transpose(1, 0)`).
    splits.mat                 MATLAB v5: trainNdxs (795×1), testNdxs (654×1), 1-based image numbers
                               (Eigen / Couprie split; e.g. VainF/nyuv2-python-toolkit reads
                               `splits["trainNdxs"]` and indexes `imgs[idx - 1]`).
    classMapping40.mat         Gupta et al. (CVPR'13) 894 → 40 mapping: `mapClass` (1×894, values 1..40)
                               [--map40], as read by VainF/nyuv2-python-toolkit (`loadmat(...)["mapClass"][0]`).
      or labels40.mat          per-pixel 40-class labels `labels40` (480×640×1449 in MATLAB, 0 = unlabeled)
                               [--labels40]; read with scipy (v5) or h5py (v7.3, transposed back).
    class13Mapping.mat         optional [--map13]: `classMapping13`, a struct whose 40-entry numeric field maps
                               40 → 13 classes. Without it the verified constant `MAP40_TO_13` below is used.

Output (the layout `conf/data/nyuv2.yaml` / `NpyFolderDataset` reads; MTAN / AutoMTL conventions):

    out/train/{image,label,depth,normal}/{i}.npy   795 samples (trainNdxs, in file order)
    out/val/{image,label,depth,normal}/{i}.npy     654 samples (testNdxs; val doubles as test)
    out/prepare.json                               sources, options and `i → 1-based .mat image number`

    image   H×W×3 float32 RGB in [0, 1]        bilinear resize
    label   H×W float32, 13 classes 0..12, −1 = ignore (unlabeled)      nearest resize
    depth   H×W×1 float32 metres, 0 = invalid  nearest resize (from `depths`, or `rawDepths` with --raw-depth)
    normal  H×W×3 float32 unit vectors, 0 = invalid                     nearest resize

Normals are computed from depth at the input resolution (see `normals_from_depth`): each valid pixel's
neighbours in a k×k window are back-projected with the NYU toolbox's RGB intrinsics and a plane is fitted
(smallest principal axis of their covariance). The frame is OpenCV's (x right, y down, z forward) and
normals face the camera, the convention of `mtnas.data.synthetic`. These are *not* the Eigen & Fergus
normals shipped in the MTAN download (computed from raw depth with their own method and smoothing), so
normal metrics on a prepared copy are not directly comparable with numbers reported on that download.

All metrics on the prepared copy are computed at the output size (288×384 by default), as in MTAN /
AutoMTL, not at the original 480×640 (nearest-downsampled labels and depth; no evaluation crop).

Everything is written to a temporary sibling folder that is renamed into place at the end, so an
interrupted run never leaves a half-written dataset.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtnas.errors import DataError

NUM_RAW_CLASSES = 894
# The 40 → 13 class mapping of Couprie et al. 2013 / Eigen & Fergus 2015 (13 classes: 1 bed, 2 books,
# 3 ceiling, 4 chair, 5 floor, 6 furniture, 7 objects, 8 picture, 9 sofa, 10 table, 11 tv, 12 wall,
# 13 window). Entry k−1 is the 13-class label of 40-class label k (1 wall, 2 floor, 3 cabinet, …,
# 40 other-prop). Verified in howard-mahe/nyudv2_class_mapping utils/map40to13.m and README.md (which
# derive class13Mapping.mat from classMapping40.mat), and equal to the array
# NYU40_SEMANTIC_ID_TO_NYU13_SEMANTIC_ID another public loader reads off ankurhanda/nyuv2-meta-data's
# class13Mapping.mat.
MAP40_TO_13 = (
    12, 5, 6, 1, 4, 9, 10, 12, 13, 6,  # wall floor cabinet bed chair sofa table door window bookshelf
    8, 6, 13, 10, 6, 13, 6, 7, 7, 5,  # picture counter blinds desk shelves curtain dresser pillow mirror mat
    7, 3, 2, 6, 11, 7, 7, 7, 7, 7,  # clothes ceiling books fridge tv paper towel shower-curtain box board
    7, 6, 7, 7, 7, 7, 7, 7, 6, 7,  # person nightstand toilet sink lamp bathtub bag other-struct/-furn/-prop
)  # fmt: skip
CLASS_NAMES_13 = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
    "picture", "sofa", "table", "tv", "wall", "window",
)  # fmt: skip
# RGB intrinsics of the NYU Depth v2 toolbox (camera_params.m), for 640×480 images in MATLAB's 1-based
# pixel coordinates (rgb_plane2rgb_world.m back-projects with meshgrid(1:640, 1:480)); verified in
# zhirongw/3DShapeNets 3D/rgb_plane2rgb_world.m and many copies of camera_params.m.
NYU_FX, NYU_FY = 5.1885790117450188e02, 5.1946961112127485e02
NYU_CX, NYU_CY = 3.2558244941119034e02, 2.5373616633400465e02
NYU_SIZE = (480, 640)
OUTPUT_SIZE = (288, 384)
FOLDERS = ("image", "label", "depth", "normal")


# --- reading MATLAB files -------------------------------------------------------------------------------
def _require_file(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(path, f"file is missing ({what}).")
    return path


def _is_hdf5(path: Path) -> bool:
    import h5py

    return bool(h5py.is_hdf5(path))


def _h5_to_matlab(obj: Any) -> Any:
    """An h5py dataset as a numpy array in MATLAB's axis order (h5py sees MATLAB arrays transposed)."""
    return np.asarray(obj[()]).T


def load_mat_variable(path: Path, name: str, what: str) -> Any:
    """Variable `name` of a .mat file (v5 via scipy, v7.3 via h5py) in MATLAB's axis order; a struct comes
    back as a dict of its fields. `DataError` names the file and the variable when either is missing."""
    path = _require_file(path, what)
    if _is_hdf5(path):
        import h5py

        with h5py.File(path, "r") as f:
            if name not in f:
                found = sorted(k for k in f if not k.startswith("#"))
                raise DataError(path, f"variable `{name}` is missing ({what}); found {found}.")
            obj = f[name]
            if isinstance(obj, h5py.Group):  # a MATLAB struct: one dataset per field
                return {k: _h5_to_matlab(v) for k, v in obj.items() if isinstance(v, h5py.Dataset)}
            return _h5_to_matlab(obj)
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path, variable_names=[name])
    except (MatReadError, ValueError, TypeError, OSError) as e:
        raise DataError(path, f"not a readable MATLAB .mat file ({e}).") from None
    if name not in mat:
        try:
            from scipy.io import whosmat

            found = sorted(n for n, *_ in whosmat(path))
        except Exception:  # noqa: BLE001 — only for the message
            found = []
        raise DataError(path, f"variable `{name}` is missing ({what}); found {found}.")
    value = mat[name]
    if value.dtype.names:  # a MATLAB struct (1×1 struct array)
        return {field: np.asarray(value[field][0, 0]) for field in value.dtype.names}
    return value


def _integral(path: Path, name: str, arr: Any, lo: int, hi: int) -> np.ndarray:
    """A numeric array whose values are integers in [lo, hi], as int64; `DataError` otherwise."""
    arr = np.asarray(arr)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise DataError(path, f"`{name}` has dtype {arr.dtype}, expected numbers.")
    if arr.size and (not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr))):
        raise DataError(path, f"`{name}` holds non-integral values, expected integers {lo}..{hi}.")
    out = arr.astype(np.int64)
    bad = (out < lo) | (out > hi)
    if bad.any():
        raise DataError(path, f"`{name}` holds the value {out[bad].flat[0]}, expected {lo}..{hi}.")
    return out


def read_splits(path: Path, num_images: int) -> dict[str, np.ndarray]:
    """`splits.mat` → {"train": trainNdxs, "val": testNdxs} as 0-based image indices (file order kept)."""
    out = {}
    for split, name in (("train", "trainNdxs"), ("val", "testNdxs")):
        value = load_mat_variable(path, name, "the NYUv2 train/test split")
        idx = _integral(path, name, value, 1, num_images).ravel() - 1
        if idx.size == 0:
            raise DataError(path, f"`{name}` is empty.")
        if len(np.unique(idx)) != len(idx):
            raise DataError(path, f"`{name}` lists an image twice.")
        out[split] = idx
    both = np.intersect1d(out["train"], out["val"])
    if both.size:
        raise DataError(path, f"image {both[0] + 1} is in both trainNdxs and testNdxs.")
    return out


def read_map40(path: Path) -> np.ndarray:
    """`classMapping40.mat` → a lookup table t (895 entries): 40-class label = t[raw 894-class label], 0 ↦ 0."""
    value = load_mat_variable(path, "mapClass", "Gupta et al.'s 894 → 40 class mapping")
    m = _integral(path, "mapClass", value, 0, 40).ravel()
    if m.size != NUM_RAW_CLASSES:
        raise DataError(path, f"`mapClass` has {m.size} entries, expected {NUM_RAW_CLASSES} (one per class).")
    return np.concatenate([[0], m])


def read_map13(path: Path | None) -> np.ndarray:
    """A lookup table t (41 entries): 13-class label = t[40-class label], 0 ↦ 0. From `class13Mapping.mat`
    (`classMapping13`: a struct with a 40-entry numeric field, or a plain 40-entry array) or the constant."""
    if path is None:
        return np.array([0, *MAP40_TO_13], dtype=np.int64)
    value = load_mat_variable(path, "classMapping13", "the 40 → 13 class mapping")
    candidates = value.values() if isinstance(value, dict) else [value]
    for arr in candidates:
        arr = np.asarray(arr)
        if arr.dtype != object and np.issubdtype(arr.dtype, np.number) and arr.size == 40:
            return np.concatenate([[0], _integral(path, "classMapping13", arr, 1, 13).ravel()])
    raise DataError(path, "`classMapping13` has no 40-entry numeric field mapping 40 → 13 classes.")


# --- the labeled .mat ------------------------------------------------------------------------------------
class LabeledMat:
    """Random access to the samples of `nyu_depth_v2_labeled.mat`, in H×W orientation."""

    def __init__(self, path: Path, depth_key: str = "depths", labels40: Path | None = None):
        import h5py

        self.path = _require_file(path, "the labeled NYUv2 file nyu_depth_v2_labeled.mat")
        if not _is_hdf5(self.path):
            raise DataError(self.path, "not a MATLAB v7.3 (HDF5) file; expected nyu_depth_v2_labeled.mat.")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as e:
            raise DataError(self.path, f"not a readable HDF5 file ({e}).") from None
        try:
            self.images = self._dataset("images", 4)
            n, c, w, h = self.images.shape
            if c != 3:
                raise DataError(
                    self.path, f"dataset `images` has shape {self.images.shape}, expected (N, 3, W, H)."
                )
            self.num_images, self.size = n, (h, w)
            self.depths = self._dataset(depth_key, 3, (n, w, h))
            self.labels = None if labels40 is not None else self._dataset("labels", 3, (n, w, h))
            self.labels40_path = None if labels40 is None else _require_file(labels40, "labels40.mat")
            self.labels40 = None if labels40 is None else self._read_labels40(self.labels40_path)
        except BaseException:
            self.file.close()
            raise

    def _dataset(self, name: str, ndim: int, shape: tuple | None = None):
        if name not in self.file:
            found = sorted(k for k in self.file if not k.startswith("#"))
            raise DataError(self.path, f"dataset `{name}` is missing; found {found}.")
        ds = self.file[name]
        if not hasattr(ds, "shape") or len(ds.shape) != ndim or (shape is not None and ds.shape != shape):
            want = shape or f"{ndim} axes"
            raise DataError(
                self.path,
                f"dataset `{name}` has shape {getattr(ds, 'shape', None)}, expected {want} "
                "(h5py reads MATLAB's H×W×…×N arrays transposed).",
            )
        if not np.issubdtype(ds.dtype, np.number):
            raise DataError(self.path, f"dataset `{name}` has dtype {ds.dtype}, expected numbers.")
        return ds

    def _read_labels40(self, path: Path):
        value = load_mat_variable(path, "labels40", "per-pixel 40-class labels")
        want = (*self.size, self.num_images)
        if np.shape(value) != want:
            raise DataError(path, f"`labels40` has shape {np.shape(value)} (MATLAB order), expected {want}.")
        return value

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> LabeledMat:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def image(self, i: int) -> np.ndarray:
        """H×W×3 uint8 RGB."""
        arr = np.asarray(self.images[i]).transpose(2, 1, 0)
        if arr.dtype != np.uint8:
            raise DataError(self.path, f"dataset `images` has dtype {arr.dtype}, expected uint8.")
        return arr

    def depth(self, i: int) -> np.ndarray:
        """H×W float32 metres, 0 = invalid (NaN, inf and non-positive values become 0)."""
        d = np.asarray(self.depths[i], dtype=np.float32).T
        return np.where(np.isfinite(d) & (d > 0), d, 0).astype(np.float32)

    def label40(self, i: int, map40: np.ndarray | None) -> np.ndarray:
        """H×W int64 40-class labels, 0 = unlabeled."""
        if self.labels40 is not None:
            where = f"{self.labels40_path} (image {i + 1})"
            return _integral(where, "labels40", self.labels40[..., i], 0, 40)
        raw = np.asarray(self.labels[i]).T
        where = f"{self.path} (labels, image {i + 1})"
        raw = _integral(where, "labels", raw, 0, NUM_RAW_CLASSES)
        assert map40 is not None
        return map40[raw]


# --- geometry ----------------------------------------------------------------------------------------------
def pixel_rays(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates (x/z, y/z) of every pixel centre, OpenCV frame (x right, y down), with
    the NYU toolbox intrinsics. Images of another size are taken as rescaled 480×640 frames."""
    sy, sx = NYU_SIZE[0] / height, NYU_SIZE[1] / width
    u = (np.arange(width) + 0.5) * sx - 0.5 + 1  # pixel centre in full-size, 1-based (MATLAB) coordinates
    v = (np.arange(height) + 0.5) * sy - 0.5 + 1
    return np.broadcast_to((u - NYU_CX) / NYU_FX, (height, width)), np.broadcast_to(
        ((v - NYU_CY) / NYU_FY)[:, None], (height, width)
    )


def smallest_eigenvector(a00, a01, a02, a11, a12, a22) -> tuple[np.ndarray, np.ndarray]:
    """Unit eigenvector of the smallest eigenvalue of many symmetric 3×3 matrices, in closed form (Smith's
    trigonometric eigenvalues, then the null vector of A − λI as the largest cross product of its rows).
    Returns (vectors …×3, ok): `ok` is False where the smallest eigenvalue is not well separated (points on
    a line or a single point), so the plane normal is undefined."""
    q = (a00 + a11 + a22) / 3
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p1 = a01**2 + a02**2 + a12**2
    p = np.sqrt((b00**2 + b11**2 + b22**2 + 2 * p1) / 6)
    safe = np.where(p > 0, p, 1)
    det = b00 * (b11 * b22 - a12**2) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)
    r = np.clip(det / (2 * safe**3), -1, 1)
    lam = q + 2 * p * np.cos(np.arccos(r) / 3 + 2 * np.pi / 3)
    rows = (
        np.stack([a00 - lam, a01, a02], -1),
        np.stack([a01, a11 - lam, a12], -1),
        np.stack([a02, a12, a22 - lam], -1),
    )
    crosses = np.stack([np.cross(rows[0], rows[1]), np.cross(rows[0], rows[2]), np.cross(rows[1], rows[2])])
    norms = np.linalg.norm(crosses, axis=-1)
    best = norms.argmax(0)
    vec = np.take_along_axis(crosses, best[None, ..., None], 0)[0]
    norm = np.take_along_axis(norms, best[None], 0)[0]
    scale = np.maximum(np.abs(a00) + np.abs(a11) + np.abs(a22), 1e-300)
    ok = (p > 0) & (norm > 1e-9 * scale**2)
    return vec / np.where(ok, norm, 1)[..., None], ok


def normals_from_depth(depth: np.ndarray, window: int = 7, min_valid: float = 0.5) -> np.ndarray:
    """H×W depth (metres, 0 = invalid) → H×W×3 float32 camera-frame unit normals facing the camera, 0 where
    the depth is invalid or fewer than `min_valid` of the k×k window (k = `window`) has valid depth.

    Method: back-project every pixel with the NYU toolbox intrinsics (`pixel_rays`), fit a plane to the valid
    points of each window by least squares (normal = smallest principal axis of their covariance, from box
    sums), and orient it towards the camera (n · p < 0). Windows that straddle a depth discontinuity blend
    the two surfaces, as any local plane fit does."""
    from scipy.ndimage import uniform_filter

    if window < 3 or window % 2 == 0:
        raise ValueError(f"normal window must be odd and ≥ 3, got {window}")
    z = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(z) & (z > 0)
    z = np.where(valid, z, 0.0)
    xr, yr = pixel_rays(*z.shape)
    pts = (xr * z, yr * z, z)
    m = valid.astype(np.float64)

    def box(x: np.ndarray) -> np.ndarray:
        return uniform_filter(x, size=window, mode="constant", cval=0.0)

    count = box(m)  # share of the window (in-image or not) with valid depth
    inside = box(np.ones_like(m))  # share of the window inside the image
    enough = valid & (count >= min_valid * inside - 1e-9)
    n = np.where(count > 0, count, 1)
    mean = [box(c) / n for c in pts]
    cov = {}
    for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)):
        cov[i, j] = box(pts[i] * pts[j]) / n - mean[i] * mean[j]
    normal, ok = smallest_eigenvector(cov[0, 0], cov[0, 1], cov[0, 2], cov[1, 1], cov[1, 2], cov[2, 2])
    facing = (normal * np.stack(pts, -1)).sum(-1)
    normal = np.where((facing > 0)[..., None], -normal, normal)
    keep = enough & ok
    return np.where(keep[..., None], normal, 0.0).astype(np.float32)


def resize(arr: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize an H×W or H×W×C array: "bilinear" (images) or "nearest" (labels, depth, normals)."""
    if tuple(arr.shape[:2]) == tuple(size):
        return arr
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    if mode == "bilinear":
        t = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    else:
        t = F.interpolate(t, size=tuple(size), mode="nearest")
    out = t[0, 0] if arr.ndim == 2 else t[0].permute(1, 2, 0)
    return out.numpy()


# --- the conversion ----------------------------------------------------------------------------------------
def convert_sample(
    mat: LabeledMat,
    i: int,
    map40: np.ndarray | None,
    map13: np.ndarray,
    size: tuple[int, int],
    normal_window: int,
) -> dict[str, np.ndarray]:
    """One image of the .mat (0-based index `i`) → the four arrays of the preprocessed layout."""
    image = mat.image(i).astype(np.float32) / 255.0
    depth = mat.depth(i)
    label = map13[mat.label40(i, map40)] - 1  # 0 (unlabeled) → −1 = ignore
    normal = normals_from_depth(depth, normal_window)
    depth_out = resize(depth, size, "nearest")
    return {
        "image": np.clip(resize(image, size, "bilinear"), 0, 1).astype(np.float32),
        "label": resize(label.astype(np.float32), size, "nearest").astype(np.float32),
        "depth": depth_out[..., None].astype(np.float32),
        "normal": resize(normal, size, "nearest").astype(np.float32),
    }


def prepare_nyuv2(
    mat: str | os.PathLike,
    splits: str | os.PathLike,
    out: str | os.PathLike,
    *,
    map40: str | os.PathLike | None = None,
    labels40: str | os.PathLike | None = None,
    map13: str | os.PathLike | None = None,
    size: Sequence[int] = OUTPUT_SIZE,
    raw_depth: bool = False,
    normal_window: int = 7,
    overwrite: bool = False,
    progress: bool = True,
    limit: int | None = None,
) -> Path:
    """Convert the labeled NYUv2 .mat into `out/{train,val}/{image,label,depth,normal}/{i}.npy` (see the
    module docstring). One of `map40` (classMapping40.mat) or `labels40` (labels40.mat) is required.
    `limit`: only the first `limit` images of each split (a quick look). Returns `out`."""
    out = Path(out).expanduser().absolute()
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise DataError(out, f"output size {size} must be positive.")
    if (map40 is None) == (labels40 is None):
        raise DataError(
            mat,
            "pass exactly one of --map40 classMapping40.mat (Gupta et al.'s 894 → 40 mapping, `mapClass`) "
            "or --labels40 labels40.mat (per-pixel 40-class labels).",
        )
    if out.exists() and not overwrite:
        raise DataError(out, "output folder already exists (pass --overwrite to replace it).")
    if normal_window < 3 or normal_window % 2 == 0:
        raise DataError(out, f"--normal-window must be odd and ≥ 3, got {normal_window}.")
    depth_key = "rawDepths" if raw_depth else "depths"
    lut40 = read_map40(Path(map40)) if map40 is not None else None
    lut13 = read_map13(Path(map13) if map13 is not None else None)
    with LabeledMat(Path(mat), depth_key, Path(labels40) if labels40 is not None else None) as data:
        split_idx = read_splits(Path(splits), data.num_images)
        if limit is not None:
            split_idx = {k: v[:limit] for k, v in split_idx.items()}
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            total = sum(len(v) for v in split_idx.values())
            with _progress(progress, total, f"Preparing NYUv2 ({total} images) → {out}") as advance:
                for split, indices in split_idx.items():
                    for folder in FOLDERS:
                        (tmp / split / folder).mkdir(parents=True, exist_ok=True)
                    for k, i in enumerate(indices):
                        sample = convert_sample(data, int(i), lut40, lut13, size, normal_window)
                        for folder, arr in sample.items():
                            np.save(tmp / split / folder / f"{k}.npy", arr)
                        advance()
            meta = {
                "source": str(Path(mat).expanduser().absolute()),
                "splits": str(Path(splits).expanduser().absolute()),
                "labels": {
                    "map40": str(map40) if map40 is not None else None,
                    "labels40": str(labels40) if labels40 is not None else None,
                    "map13": str(map13) if map13 is not None else "built-in MAP40_TO_13",
                    "classes": list(CLASS_NAMES_13),
                    "ignore": -1,
                },
                "depth": depth_key,
                "normals": f"plane fit over {normal_window}×{normal_window} windows, NYU toolbox intrinsics, "
                "OpenCV camera frame, facing the camera",
                "input_size": list(data.size),
                "size": list(size),
                "mat_index_1based": {s: [int(i) + 1 for i in v] for s, v in split_idx.items()},
            }
            (tmp / "prepare.json").write_text(json.dumps(meta, indent=1))
            _move_into_place(tmp, out, overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    old = None
    if out.exists():
        if not overwrite:
            raise DataError(out, "output folder appeared while preparing (pass --overwrite to replace it).")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _progress:
    """A rich progress bar when asked for, else nothing; yields an `advance()` callable."""

    def __init__(self, enabled: bool, total: int, description: str):
        self.enabled, self.total, self.description = enabled, total, description

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        )
        self._bar.start()
        task = self._bar.add_task(self.description, total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._bar.stop()


def main(args: Any) -> int:
    """Entry point for `mtnas-data prepare nyuv2` (argparse namespace from `mtnas.data.cli`)."""
    out = prepare_nyuv2(
        args.mat,
        args.splits,
        args.out,
        map40=args.map40,
        labels40=args.labels40,
        map13=args.map13,
        size=args.size,
        raw_depth=args.raw_depth,
        normal_window=args.normal_window,
        overwrite=args.overwrite,
        limit=args.limit,
    )
    print(f"wrote {out}; check it with: mtnas-data check nyuv2 {out}")
    return 0
