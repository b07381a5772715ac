"""Which reader reads which on-disk format, and how a data config becomes datasets.

A data config (`conf/data/<name>.yaml`) names its `format`, its `splits` (role → the split's name on
disk; `test: null` means the val split doubles as test) and, per task in `available_tasks`, a `source`
that tells the reader where that target lives. Readers are imported lazily: `mtnas --help` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mtnas.errors import ConfigError

FORMATS: dict[str, str] = {
    "npy_folder": "mtnas.data.npy_folder:NpyFolderDataset",
    "nyud": "mtnas.data.nyud:NYUDDataset",
    "cityscapes": "mtnas.data.cityscapes:CityscapesDataset",
    "taskonomy": "mtnas.data.taskonomy:TaskonomyDataset",
    "pascal_context": "mtnas.data.pascal_context:PascalContextDataset",
}
SPLIT_ROLES = ("train", "val", "test")


def dataset_class(fmt: str):
    if fmt not in FORMATS:
        raise ConfigError("data.format", f"got {fmt!r}; expected one of {sorted(FORMATS)}.")
    module, cls = FORMATS[fmt].split(":")
    return getattr(importlib.import_module(module), cls)


def split_name(data_cfg: Mapping[str, Any], role: str) -> str:
    """The on-disk split for a role; a missing test split falls back to val (NYUv2, NYUD, PASCAL)."""
    splits = data_cfg.get("splits") or {}
    name = splits.get(role)
    if name is None and role == "test":
        name = splits.get("val", "val")
    return str(name if name is not None else role)


def targets(data_cfg: Mapping[str, Any], tasks: list[str]) -> dict:
    from mtnas.data.files import Target
    from mtnas.tasks import TASK_TYPES

    out = {}
    for t in tasks:
        spec = dict(data_cfg["available_tasks"][t])
        type_ = spec.get("type", t)
        out[t] = Target(
            name=t,
            kind=TASK_TYPES[type_].kind,
            source=spec.get("source", t),
            num_classes=spec.get("num_classes"),
            channels=spec.get("channels", 1),
            options=spec,
        )
    return out


def build_dataset(
    data_cfg: Mapping[str, Any],
    root: Path,
    role: str,
    tasks: list[str],
    transform: Callable | None = None,
    strict: bool = True,
):
    cls = dataset_class(data_cfg.get("format", "npy_folder"))
    return cls(
        root,
        split_name(data_cfg, role),
        targets(data_cfg, tasks),
        image_size=tuple(data_cfg["image_size"]) if data_cfg.get("image_size") else None,
        transform=transform,
        skip_bad_samples=bool(data_cfg.get("skip_bad_samples", False)),
        options=data_cfg,
        strict=strict,
    )
