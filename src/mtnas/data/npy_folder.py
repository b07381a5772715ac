"""Reader for the widely used preprocessed NYUv2 layout (and the synthetic dataset, written the same way).

    root/{train,val[,test]}/{image,label,depth,normal[,edge]}/{i}.npy

    image   H×W×3 float, RGB in [0, 1]
    label   H×W   13 classes (integral values, any numeric dtype), −1 = ignore
    depth   H×W×1 float metres, 0 = invalid
    normal  H×W×3 float camera-frame unit vectors, 0 = invalid
    edge    H×W   0/1 (optional; the synthetic dataset has it)

Batches follow DESIGN.md §3: `image` (B,3,H,W); `semseg` (B,H,W) long; `depth` (B,1,H,W);
`normal` (B,3,H,W); `edge` (B,1,H,W). NYUv2 has no test split: when `root/test` is missing, `val` is
also used as the test split, as in the literature.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mtnas.errors import DataError

# Expected trailing channels per task type of the on-disk array (None = 2-D array).
_CHANNELS: dict[str, int | None] = {"image": 3, "semseg": None, "depth": 1, "normal": 3, "edge": None}


def list_indices(folder: Path) -> list[int]:
    """Indices of `{i}.npy` files in a folder, which must be exactly 0..N-1."""
    if not folder.is_dir():
        raise DataError(folder, "folder is missing.")
    names = [p.stem for p in folder.glob("*.npy")]
    bad = [n for n in names if not n.isdigit()]
    if bad:
        raise DataError(folder / f"{bad[0]}.npy", "file names must be `<index>.npy` with index 0, 1, 2, …")
    idx = sorted(int(n) for n in names)
    if not idx:
        raise DataError(folder, "folder has no `<index>.npy` files.")
    if idx != list(range(len(idx))):
        missing = sorted(set(range(idx[-1] + 1)) - set(idx))
        raise DataError(
            folder / f"{missing[0]}.npy", f"file is missing ({len(missing)} index(es) missing in all)."
        )
    return idx


def check_array(path: Path, arr: np.ndarray, kind: str, size: tuple[int, int] | None) -> list[str]:
    """Problems with one loaded array (empty list = fine). Cheap: shape, dtype and value range."""
    problems = []
    channels = _CHANNELS[kind]
    want_ndim = 2 if channels is None else 3
    if arr.ndim != want_ndim or (channels is not None and arr.shape[-1] != channels):
        want = "H×W" if channels is None else f"H×W×{channels}"
        return [f"{path}: shape {tuple(arr.shape)}, expected {want}"]
    if size is not None and tuple(arr.shape[:2]) != tuple(size):
        problems.append(f"{path}: size {tuple(arr.shape[:2])}, expected {tuple(size)} (data.image_size)")
    if not np.issubdtype(arr.dtype, np.number):
        problems.append(f"{path}: dtype {arr.dtype}, expected a numeric array")
        return problems
    if kind == "image" and not np.issubdtype(arr.dtype, np.floating):
        problems.append(f"{path}: dtype {arr.dtype}, expected float RGB in [0, 1]")
    if not np.isfinite(arr).all():
        problems.append(f"{path}: contains NaN or inf")
    return problems


def check_values(path: Path, arr: np.ndarray, kind: str, num_classes: int | None) -> list[str]:
    if kind == "semseg" and num_classes is not None:
        ok = (arr == -1) | ((arr >= 0) & (arr < num_classes))
        if not ok.all() or not np.all(arr == np.round(arr)):
            bad = arr[~ok] if not ok.all() else arr[arr != np.round(arr)]
            return [f"{path}: label value {float(bad.flat[0]):g} outside {{-1, 0..{num_classes - 1}}}"]
    if kind == "depth" and (arr < 0).any():
        return [f"{path}: negative depth (0 marks invalid pixels)"]
    if kind == "image" and (arr.min() < -1e-3 or arr.max() > 1 + 1e-3):
        return [f"{path}: image values in [{arr.min():.3g}, {arr.max():.3g}], expected [0, 1]"]
    if kind == "edge" and not np.isin(arr, (0, 1, 255)).all():
        return [f"{path}: edge values must be 0, 1 (or 255 = ignore)"]
    return []


class NpyFolderDataset(Dataset):
    """One split of the layout above. `targets` maps task name → (folder, task type)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        targets: Mapping[str, tuple[str, str]],
        image_size: tuple[int, int] | None = None,
        transform: Callable | None = None,
        num_classes: Mapping[str, int] | None = None,
    ):
        self.root = Path(root)
        self.split_dir = self.root / split
        if not self.root.is_dir():
            raise DataError(self.root, "dataset root does not exist (set `data.root`).")
        if not self.split_dir.is_dir():
            raise DataError(self.split_dir, f"split folder `{split}` is missing.")
        self.targets = dict(targets)
        self.image_size = tuple(image_size) if image_size else None
        self.transform = transform
        self.kinds = {"image": "image", **{t: kind for t, (_, kind) in self.targets.items()}}
        self.folders = {"image": "image", **{t: folder for t, (folder, _) in self.targets.items()}}
        self.indices = list_indices(self.split_dir / "image")
        for key, folder in self.folders.items():
            if key == "image":
                continue
            other = list_indices(self.split_dir / folder)
            if len(other) != len(self.indices):
                n = min(len(other), len(self.indices))
                raise DataError(
                    self.split_dir / folder / f"{n}.npy",
                    f"`{folder}` has {len(other)} files but `image` has {len(self.indices)}.",
                )
        # Cheap start-up check of the first sample: shapes and dtypes (mtnas-data check reads all).
        num_classes = num_classes or {}
        for key, folder in self.folders.items():
            path = self.split_dir / folder / "0.npy"
            arr = self._load(path, mmap=True)
            problems = check_array(path, arr, self.kinds[key], self.image_size)
            if problems:
                raise DataError(path, problems[0].split(": ", 1)[1])

    def __len__(self) -> int:
        return len(self.indices)

    @staticmethod
    def _load(path: Path, mmap: bool = False) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(path, "file is missing.") from None
        except (ValueError, OSError, EOFError) as e:
            raise DataError(path, f"not a readable .npy array ({e}).") from None

    def load_raw(self, index: int) -> dict[str, np.ndarray]:
        return {key: self._load(self.split_dir / f / f"{index}.npy") for key, f in self.folders.items()}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        raw = self.load_raw(index)
        sample = {}
        for key, arr in raw.items():
            kind = self.kinds[key]
            path = self.split_dir / self.folders[key] / f"{index}.npy"
            problems = check_array(path, arr, kind, self.image_size)
            if problems:
                raise DataError(path, problems[0].split(": ", 1)[1])
            sample[key] = _to_tensor(arr, kind)
        if self.transform is not None:
            sample = self.transform(sample, self.kinds)
        return sample


def _to_tensor(arr: np.ndarray, kind: str) -> Tensor:
    if kind == "semseg":
        return torch.from_numpy(np.asarray(arr)).round().long()
    t = torch.from_numpy(np.asarray(arr, dtype=np.float32))
    if t.ndim == 2:
        return t[None]
    return t.permute(2, 0, 1).contiguous()
