"""LightningDataModule for every dataset format (`mtnas.data.formats`)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from mtnas.data.files import FileDataset
from mtnas.data.formats import build_dataset
from mtnas.data.synthetic import SyntheticSpec, generate
from mtnas.data.transforms import Compose, RandomHorizontalFlip, RandomScaleCrop
from mtnas.errors import ConfigError
from mtnas.tasks import Task, build_tasks
from mtnas.utils.distributed import rank_and_world


def generates_synthetic(data_cfg: Mapping[str, Any]) -> bool:
    """A configured `data.root` is always read; the `data.synthetic` block only generates data without one.
    (So `+experiment=demo data=nyuv2 data.root=...` reads NYUv2 although the demo's block is still there.)"""
    return bool(data_cfg.get("synthetic")) and not data_cfg.get("root")


def resolve_root(data_cfg: Mapping[str, Any], cache_dir: str | Path, progress: bool = True) -> Path:
    """The dataset folder: the configured `data.root`, or the synthetic cache (generated on first use)."""
    if generates_synthetic(data_cfg):
        return generate(SyntheticSpec(**data_cfg["synthetic"]), cache_dir, progress=progress)
    if not data_cfg.get("root"):
        raise ConfigError(
            "data.root", f"the {data_cfg['name']} dataset needs `data.root=/path/to/{data_cfg['name']}`."
        )
    return Path(data_cfg["root"]).expanduser()


def image_size(data_cfg: Mapping[str, Any]) -> tuple[int, int]:
    if data_cfg.get("image_size"):
        return tuple(int(x) for x in data_cfg["image_size"])
    return int(data_cfg["synthetic"]["height"]), int(data_cfg["synthetic"]["width"])


def collate_samples(samples: list[dict[str, Any]], tasks: Mapping[str, Task]) -> dict[str, Any]:
    """A batch from samples: each task's targets by its own `collate` (variable-length targets stay
    lists), everything else (the image) stacked."""
    return {
        key: tasks[key].collate(values) if key in tasks else default_collate(values)
        for key, values in ((k, [s[k] for s in samples]) for k in samples[0])
    }


class EpochShuffle(Sampler[int]):
    """A random order of `size` samples drawn from (`seed`, epoch) alone, where `epoch` is the data module's
    shared epoch counter. The global random state, and how many draws anything else took from it, play no
    part: a run resumed at epoch k sees the order an uninterrupted run saw."""

    def __init__(self, size: int, seed: int, epoch: torch.Tensor):
        self.size, self.seed, self.epoch = size, seed, epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + int(self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class AlternatingBatches(Sampler[list[int]]):
    """Batches that alternate between two disjoint subsets of a split: `rounds[0]` batches of `subsets[0]`,
    then `rounds[1]` of `subsets[1]`, and so on (AutoMTL's weight and policy steps); each batch's samples
    are `(subset, index)` pairs (`SubsetTagged` puts the subset into the batch). Each subset is cycled in
    an order drawn from (seed, epoch, subset); the phase runs on across epochs, so batch k of the whole fit
    always comes from the same subset, however the fit is split by resumes."""

    def __init__(
        self,
        subsets: tuple[list[int], list[int]],
        rounds: tuple[int, int],
        batch_size: int,
        seed: int,
        epoch: torch.Tensor,
        rank: int = 0,
        world: int = 1,
    ):
        self.subsets, self.rounds, self.batch_size = subsets, rounds, batch_size
        self.seed, self.epoch, self.rank, self.world = seed, epoch, rank, world

    def __len__(self) -> int:
        return sum(len(s) // (self.batch_size * self.world) for s in self.subsets)

    def phase(self, step: int) -> int:
        """0 (first subset) or 1 (second) for batch `step` of the whole fit."""
        return int(step % sum(self.rounds) >= self.rounds[0])

    def __iter__(self):
        epoch = int(self.epoch)
        orders, cursors = [], [0, 0]
        for k, subset in enumerate(self.subsets):
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch * 7 + k)
            orders.append([subset[i] for i in torch.randperm(len(subset), generator=g).tolist()])
        first = epoch * len(self)
        for step in range(first, first + len(self)):
            k = self.phase(step)
            # Under DDP every process draws the same global batch and takes its own share of it.
            order, bs = orders[k], self.batch_size * self.world
            if cursors[k] + bs > len(order):
                cursors[k] = 0
            mine = order[cursors[k] : cursors[k] + bs][
                self.rank * self.batch_size : (self.rank + 1) * self.batch_size
            ]
            yield [(k, i) for i in mine]
            cursors[k] += bs


class SubsetTagged(Dataset):
    """Samples addressed as (subset, index), each carrying its `subset` (0 or 1) into the batch."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        subset, index = item
        return {**self.dataset[index], "subset": subset}


class MultiTaskDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data_cfg: Mapping[str, Any],
        tasks: list[str],
        cache_dir: str | Path,
        progress: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        self.seed = seed
        # The training epoch, in shared memory so that data workers (persistent ones too) see it.
        self.epoch = torch.zeros((), dtype=torch.long).share_memory_()
        self.cfg = dict(data_cfg)
        self.task_names = list(tasks)
        self.tasks = build_tasks(self.task_names, self.cfg["available_tasks"])
        self.cache_dir = cache_dir
        self.progress = progress
        self.datasets: dict[str, FileDataset] = {}
        self.alternating: tuple[tuple[list[int], list[int]], tuple[int, int]] | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return image_size(self.cfg)

    def prepare_data(self) -> None:
        resolve_root(self.cfg, self.cache_dir, self.progress)  # generates synthetic data once (rank 0)

    def _dataset(self, split: str, augment: bool = True) -> FileDataset:
        key = split if augment else f"{split}/plain"
        if key not in self.datasets:
            root = resolve_root(self.cfg, self.cache_dir, progress=False)
            transform = None
            if split == "train" and augment and self.cfg.get("augment", True):
                transform = Compose(
                    [RandomScaleCrop(self.cfg.get("scales", (1.0, 1.2, 1.5))), RandomHorizontalFlip()],
                    seed=self.seed,
                    epoch=self.epoch,
                )
            cfg = {**self.cfg, "image_size": self.image_size}
            self.datasets[key] = build_dataset(cfg, root, split, self.task_names, transform)
        return self.datasets[key]

    def set_epoch(self, epoch: int) -> None:
        """Called at the start of each training epoch: the data order and augmentation follow it."""
        self.epoch.fill_(epoch)

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage, ("train", "val", "test")
        )
        for split in splits:
            self._dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        bs = (
            self.cfg["batch_size"]
            if split == "train"
            else self.cfg.get("eval_batch_size", self.cfg["batch_size"])
        )
        workers = int(self.cfg.get("num_workers", 0))
        dataset = self._dataset(split)
        if shuffle and len(dataset) < bs:
            # drop_last would leave no batch at all: training would silently do nothing.
            raise ConfigError(
                "data.batch_size",
                f"is {bs} but the {split} split has only {len(dataset)} samples, so training would run "
                f"no step (the last partial batch is dropped). Use data.batch_size={len(dataset)} or less.",
            )
        return DataLoader(
            dataset,
            batch_size=bs,
            sampler=EpochShuffle(len(dataset), self.seed, self.epoch) if shuffle else None,
            # The loader's own generator (worker seeds) leaves the global random state to the augmentation.
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=workers,
            drop_last=shuffle,
            persistent_workers=workers > 0,
            collate_fn=partial(collate_samples, tasks=self.tasks),
        )

    def train_dataloader(self) -> DataLoader:
        if self.alternating is not None:
            return self._alternating_loader(*self.alternating)
        return self._loader("train", shuffle=True)

    def plain_train_dataloader(self) -> DataLoader:
        """Train images without augmentation, in a fixed random order drawn from the seed (for statistics
        such as BatchNorm recalibration)."""
        dataset = self._dataset("train", augment=False)
        return DataLoader(
            dataset,
            batch_size=self.cfg.get("eval_batch_size", self.cfg["batch_size"]),
            sampler=EpochShuffle(len(dataset), self.seed, torch.zeros((), dtype=torch.long)),
            collate_fn=partial(collate_samples, tasks=self.tasks),
        )

    def split_train(self, fraction: float, seed: int) -> tuple[list[int], list[int]]:
        """Two disjoint subsets of the train split, drawn from `seed` alone: `fraction` of it, and the rest."""
        n = len(self._dataset("train"))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        cut = min(n - 1, max(1, round(fraction * n)))
        return sorted(order[:cut]), sorted(order[cut:])

    def _alternating_loader(
        self, subsets: tuple[list[int], list[int]], rounds: tuple[int, int]
    ) -> DataLoader:
        bs = int(self.cfg["batch_size"])
        rank, world = rank_and_world()
        for k, subset in enumerate(subsets):
            if len(subset) < bs * world:
                raise ConfigError(
                    "data.batch_size",
                    f"is {bs} (× {world} processes) but train subset {k + 1} of 2 has only {len(subset)} "
                    "samples (the split for alternating weight and policy steps): use a smaller batch or a "
                    "larger train split.",
                )
        workers = int(self.cfg.get("num_workers", 0))
        return DataLoader(
            SubsetTagged(self._dataset("train")),
            batch_sampler=AlternatingBatches(subsets, rounds, bs, self.seed, self.epoch, rank, world),
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=partial(collate_samples, tasks=self.tasks),
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
