"""LightningDataModule for every dataset format (`mtnas.data.formats`)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler, default_collate

from mtnas.data.files import FileDataset
from mtnas.data.formats import build_dataset
from mtnas.data.synthetic import SyntheticSpec, generate
from mtnas.data.transforms import Compose, RandomHorizontalFlip, RandomScaleCrop
from mtnas.errors import ConfigError
from mtnas.tasks import Task, build_tasks


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

    @property
    def image_size(self) -> tuple[int, int]:
        return image_size(self.cfg)

    def prepare_data(self) -> None:
        resolve_root(self.cfg, self.cache_dir, self.progress)  # generates synthetic data once (rank 0)

    def _dataset(self, split: str) -> FileDataset:
        if split not in self.datasets:
            root = resolve_root(self.cfg, self.cache_dir, progress=False)
            transform = None
            if split == "train" and self.cfg.get("augment", True):
                transform = Compose(
                    [RandomScaleCrop(self.cfg.get("scales", (1.0, 1.2, 1.5))), RandomHorizontalFlip()],
                    seed=self.seed,
                    epoch=self.epoch,
                )
            cfg = {**self.cfg, "image_size": self.image_size}
            self.datasets[split] = build_dataset(cfg, root, split, self.task_names, transform)
        return self.datasets[split]

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
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
