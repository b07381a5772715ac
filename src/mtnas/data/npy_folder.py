"""The widely used preprocessed `.npy` layout (MTAN / AutoMTL NYUv2 and Cityscapes; the synthetic dataset).

    root/<split>/image/{i}.npy          H×W×3 float, RGB in [0, 1]
    root/<split>/<source>/{i}.npy       one folder per target, named by the task's `source` in the data
                                        config, e.g. NYUv2 `label`, `depth`, `normal`; Cityscapes
                                        `label_7`, `label_19`, `depth`

Arrays are already in the convention of `mtnas.data.files` (labels may be stored as float; −1 = ignore;
depth H×W×1 with 0 = invalid). Every sample has the same size, which must equal `data.image_size`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtnas.data.files import FileDataset, read_npy
from mtnas.errors import DataError


def npy_indices(folder: Path) -> set[int]:
    """Indices of the `{i}.npy` files in a folder."""
    if not folder.is_dir():
        raise DataError(folder, "folder is missing.")
    names = [p.stem for p in folder.glob("*.npy")]
    bad = [n for n in names if not n.isdigit()]
    if bad:
        raise DataError(folder / f"{bad[0]}.npy", "file names must be `<index>.npy` with index 0, 1, 2, …")
    if not names:
        raise DataError(folder, "folder has no `<index>.npy` files.")
    return {int(n) for n in names}


class NpyFolderDataset(FileDataset):
    resize_to_image_size = False

    def index(self) -> list[dict[str, Any]]:
        split_dir = self.root / self.split
        if not split_dir.is_dir():
            raise DataError(split_dir, f"split folder `{self.split}` is missing.")
        folders = {"image": "image", **{k: t.source for k, t in self.targets.items() if k != "image"}}
        found = {key: npy_indices(split_dir / folder) for key, folder in folders.items()}
        every = sorted(set().union(*found.values()))
        samples = []
        for i in every:
            missing = [folders[k] for k, idx in found.items() if i not in idx]
            if missing:
                self.index_problems += [f"{split_dir / m / f'{i}.npy'}: file is missing." for m in missing]
                continue
            samples.append(
                {"id": f"{self.split}/{i}", **{k: split_dir / f / f"{i}.npy" for k, f in folders.items()}}
            )
        return samples

    def decode(self, key: str, ref: Path) -> np.ndarray:
        return read_npy(ref)
