"""Classification data for MTNAS's backbone pre-search: the standard ImageFolder layout, and a synthetic
classification set made from the synthetic scenes.

Layout (as ImageNet's `train/` and `val/` are usually arranged, and torchvision's `ImageFolder` reads):

    root/train/<class>/*.{jpg,jpeg,png,bmp} (any case)
    root/val/<class>/*...

Classes are the sorted folder names of `train/`; `val/` may hold a subset of them. Images are RGB in [0, 1]
(as the multi-task readers give them, so pre-searched weights see the same input range), train images
randomly resized-cropped and flipped, val images resized (shorter side) and centre-cropped to `image_size`.

The synthetic set crops every visible object (box, table, sphere, cylinder) of the synthetic scenes, with a
margin, into `train/<class>/` and `val/<class>/` PNGs: a 4-class object classification task written in the
same layout, generated once into the cache folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mtnas.data.datamodule import AlternatingBatches, EpochShuffle, SubsetTagged
from mtnas.data.files import read_image
from mtnas.errors import ConfigError, DataError
from mtnas.utils.distributed import rank_and_world

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SYNTHETIC_VERSION = 1


def scan(
    root: Path, split: str, classes: list[str] | None = None
) -> tuple[list[str], list[tuple[Path, int]]]:
    """The classes and (file, class index) samples of `root/split`, checked: a missing folder, a split without
    images, or a val class that train does not have is a DataError naming the folder."""
    folder = root / split
    if not folder.is_dir():
        raise DataError(folder, f"missing: the ImageFolder layout needs {split}/<class>/<image files>.")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(folder, "has no class folders (expected <class>/<image files> inside).")
    if classes is None:
        classes = found
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise DataError(folder, f"has classes {unknown[:5]} that train/ does not have.")
    index = {c: i for i, c in enumerate(classes)}
    samples = [
        (f, index[c])
        for c in found
        for f in sorted((folder / c).iterdir())
        if f.suffix.lower() in EXTENSIONS and not f.name.startswith(".")
    ]
    if not samples:
        raise DataError(folder, f"has no image files ({', '.join(EXTENSIONS)}) in its class folders.")
    return classes, samples


def resize_crop(
    image: torch.Tensor, size: tuple[int, int], box: tuple[float, float, float, float]
) -> torch.Tensor:
    """The (y0, x0, h, w) box of a (3, H, W) image (fractions), resized to `size`."""
    _, h, w = image.shape
    y0, x0, bh, bw = box
    top, left = int(y0 * h), int(x0 * w)
    crop = image[:, top : top + max(1, int(bh * h)), left : left + max(1, int(bw * w))]
    return F.interpolate(crop[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


class ImageFolderDataset(Dataset):
    def __init__(
        self,
        samples: list[tuple[Path, int]],
        image_size: tuple[int, int],
        train: bool,
        seed: int,
        epoch: torch.Tensor,
    ):
        self.samples, self.image_size, self.train = samples, image_size, train
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, label = self.samples[i]
        image = torch.from_numpy(read_image(path)).permute(2, 0, 1)  # DataError names an unreadable file
        _, h, w = image.shape
        if self.train:
            # Drawn from (seed, epoch, sample) alone: the same in any data worker and after a resume.
            g = torch.Generator().manual_seed(hash((self.seed, int(self.epoch), i)) & 0x7FFFFFFF)
            scale = float(torch.empty(()).uniform_(0.35, 1.0, generator=g))
            side = scale**0.5
            y0, x0 = (float(torch.rand((), generator=g)) * (1 - side) for _ in range(2))
            image = resize_crop(image, self.image_size, (y0, x0, side, side))
            if float(torch.rand((), generator=g)) < 0.5:
                image = image.flip(-1)
        else:
            ratio = self.image_size[0] / self.image_size[1]
            bh, bw = (1.0, min(1.0, h / ratio / w)) if h / w <= ratio else (min(1.0, w * ratio / h), 1.0)
            image = resize_crop(image, self.image_size, ((1 - bh) / 2, (1 - bw) / 2, bh, bw))
        return {"image": image, "label": label}


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out = {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples]),
    }
    if "subset" in samples[0]:
        out["subset"] = torch.tensor([s["subset"] for s in samples])
    return out


class ClassificationDataModule(pl.LightningDataModule):
    """`train` / `val` of an ImageFolder root; `alternating` (set by the pre-search) gives the train loader
    AutoMTL-style alternating batches from two disjoint subsets."""

    def __init__(
        self, root: Path, image_size: tuple[int, int], batch_size: int, seed: int, num_workers: int = 0
    ):
        super().__init__()
        self.root, self.image_size, self.batch_size = Path(root), tuple(image_size), int(batch_size)
        self.seed, self.num_workers = seed, int(num_workers)
        self.epoch = torch.zeros((), dtype=torch.long).share_memory_()
        self.classes, self.train_samples = scan(self.root, "train")
        _, val = scan(self.root, "val", self.classes)
        # A fixed shuffle: the folders list one class after another, and batches of one class would skew
        # batch statistics (a supernet's validation normalises with them).
        order = torch.randperm(len(val), generator=torch.Generator().manual_seed(0)).tolist()
        self.val_samples = [val[i] for i in order]
        self.alternating: tuple[tuple[list[int], list[int]], tuple[int, int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(epoch)

    def split_train(self, fraction: float, seed: int) -> tuple[list[int], list[int]]:
        n = len(self.train_samples)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        cut = min(n - 1, max(1, round(fraction * n)))
        return sorted(order[:cut]), sorted(order[cut:])

    def train_dataloader(self) -> DataLoader:
        dataset = ImageFolderDataset(self.train_samples, self.image_size, True, self.seed, self.epoch)
        kwargs = dict(
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0, collate_fn=_collate
        )
        if self.alternating is None:
            return DataLoader(
                dataset,
                batch_size=self.batch_size,
                sampler=EpochShuffle(len(dataset), self.seed, self.epoch),
                drop_last=True,
                **kwargs,
            )
        subsets, rounds = self.alternating
        rank, world = rank_and_world()
        for k, subset in enumerate(subsets):
            if len(subset) < self.batch_size * world:
                raise ConfigError(
                    "method.presearch.batch_size",
                    f"is {self.batch_size} (× {world} processes) but train subset {k + 1} of 2 of "
                    f"{self.root / 'train'} has only {len(subset)} images: use a smaller batch or more images.",
                )
        sampler = AlternatingBatches(subsets, rounds, self.batch_size, self.seed, self.epoch, rank, world)
        return DataLoader(SubsetTagged(dataset), batch_sampler=sampler, **kwargs)

    def val_dataloader(self) -> DataLoader:
        dataset = ImageFolderDataset(self.val_samples, self.image_size, False, self.seed, self.epoch)
        return DataLoader(
            dataset, batch_size=self.batch_size, collate_fn=_collate, num_workers=self.num_workers
        )


# -- the synthetic classification set ----------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticCrops:
    margin: float = 0.15  # of the box size, on every side
    min_side: int = 8  # objects smaller than this (pixels) are left out


def generate_crops(scenes: Path, out_root: Path, spec: SyntheticCrops = SyntheticCrops()) -> Path:
    """(Once) crop every object of the synthetic scenes folder `scenes` (train → train, val → val) into an
    ImageFolder tree in `out_root`; written to a temporary folder renamed into place."""
    from PIL import Image

    meta = json.loads((scenes / "meta.json").read_text())
    name = f"classification-v{SYNTHETIC_VERSION}-m{spec.margin:g}-s{spec.min_side}"
    root = out_root / scenes.name / name
    if (root / "meta.json").exists():
        return root
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    classes = list(meta["object_classes"])
    counts: dict[str, dict[str, int]] = {}
    for split in ("train", "val"):
        counts[split] = dict.fromkeys(classes, 0)
        for c in classes:
            (tmp / split / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((scenes / split / "boxes").glob("*.npy"), key=lambda p: int(p.stem)):
            image = np.load(scenes / split / "image" / f.name)
            h, w = image.shape[:2]
            for k, (x1, y1, x2, y2, c) in enumerate(np.load(f)):
                bw, bh = x2 - x1, y2 - y1
                if min(bw, bh) < spec.min_side:
                    continue
                mx, my = spec.margin * bw, spec.margin * bh
                crop = image[
                    max(0, int(y1 - my)) : min(h, int(np.ceil(y2 + my))),
                    max(0, int(x1 - mx)) : min(w, int(np.ceil(x2 + mx))),
                ]
                Image.fromarray((crop * 255).round().astype(np.uint8)).save(
                    tmp / split / classes[int(c)] / f"{f.stem}_{k}.png"
                )
                counts[split][classes[int(c)]] += 1
    (tmp / "meta.json").write_text(
        json.dumps({"source": str(scenes), "counts": counts, "classes": classes}, indent=2)
    )
    try:
        tmp.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def classification_root(cfg: Mapping[str, Any], cache_dir: str | Path, progress: bool = True) -> Path:
    """`method.presearch.data.root` (an ImageFolder tree), or the synthetic crops of `data.synthetic`-style
    scenes (`method.presearch.data.synthetic`) generated once in the cache folder."""
    if cfg.get("root"):
        root = Path(str(cfg["root"])).expanduser()
        if not root.is_dir():
            raise ConfigError(
                "method.presearch.data.root", f"{root} is not a folder (expected train/<class>/..., val/...)."
            )
        return root
    from mtnas.data.synthetic import SyntheticSpec, generate

    scenes = generate(SyntheticSpec(**dict(cfg["synthetic"])), cache_dir, progress=progress)
    return generate_crops(scenes, Path(cache_dir).expanduser())
