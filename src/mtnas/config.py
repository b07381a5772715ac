"""Validation of a composed config before any work starts: one clear error naming the key.

This module checks the global keys (stage-independent: data, tasks, loss, optim, trainer, logger, baselines);
each method, space and search strategy checks its own section when it is built (`build_method`), which
`validate` does last, so every bad value is refused before any work.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from mtnas.errors import ConfigError, DataError
from mtnas.utils.checks import one_of

if TYPE_CHECKING:
    from mtnas.methods.base import Method

LOGGERS = ("wandb", "csv", "none")
WEIGHTINGS = ("fixed", "uncertainty")
BASELINE_SOURCES = ("run", "config")
CONVENTIONS = ("per_task", "per_metric")


def _choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> str:
    return one_of(key, OmegaConf.select(cfg, key, throw_on_missing=False), allowed)


def _positive(cfg: DictConfig, key: str, kind: type = float) -> None:
    value = OmegaConf.select(cfg, key)
    try:
        ok = value is not None and kind(value) == value and value > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(key, f"got {value!r}; expected a positive {kind.__name__}.")


def validate(cfg: DictConfig) -> Method:
    """Raise `ConfigError` / `DataError` for the first problem found; else return the configured method
    (built, so its own sections are checked too)."""
    from mtnas.tasks import TASK_TYPES  # imported here: `mtnas --help` must stay torch-free

    seed = OmegaConf.select(cfg, "seed")
    try:  # an int, or an int-like string (seed=${oc.env:SEED})
        ok = not isinstance(seed, bool | float) and str(int(seed)) == str(seed).strip()
    except (TypeError, ValueError):
        ok = False
    if not ok or not 0 <= int(seed) < 2**32:
        raise ConfigError("seed", f"got {seed!r}; expected an integer in [0, 2**32).")
    from mtnas.data.formats import FORMATS

    name = OmegaConf.select(cfg, "data.name")
    _choice(cfg, "data.format", tuple(FORMATS))
    _choice(cfg, "logger.name", LOGGERS)
    _choice(cfg, "loss.weighting", WEIGHTINGS)
    source = _choice(cfg, "baselines.source", BASELINE_SOURCES)
    _choice(cfg, "delta_m.convention", CONVENTIONS)

    if OmegaConf.is_missing(cfg.data, "root"):
        raise ConfigError(
            "data.root", f"the {name} dataset needs its folder: add `data.root=/path/to/{name}`."
        )
    if cfg.data.get("root"):
        root = Path(str(cfg.data.root)).expanduser()
        if not root.is_dir():
            raise DataError(root, "dataset folder (`data.root`) does not exist.")

    available: Mapping = cfg.data.available_tasks
    for tname, spec in available.items():
        ttype = spec.get("type", tname)
        if ttype not in TASK_TYPES:
            raise ConfigError(
                f"data.available_tasks.{tname}.type",
                f"unknown task type {ttype!r}; known: {sorted(TASK_TYPES)}.",
            )
    tasks = OmegaConf.to_container(cfg.tasks) if OmegaConf.is_list(cfg.tasks) else cfg.tasks
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError("tasks", f"got {tasks!r}; expected a non-empty list such as [semseg, depth].")
    if len(set(tasks)) != len(tasks):
        raise ConfigError("tasks", f"{tasks} lists a task twice.")
    unknown = [t for t in tasks if t not in available]
    if unknown:
        raise ConfigError(
            "tasks", f"unknown task(s) {unknown}; the {name} dataset provides {sorted(available)}."
        )

    weights = cfg.loss.weights or {}
    for t, w in weights.items():
        if t not in tasks:
            raise ConfigError(f"loss.weights.{t}", f"is not one of the selected tasks {tasks}.")
        if not isinstance(w, int | float) or w < 0:
            raise ConfigError(f"loss.weights.{t}", f"got {w!r}; expected a number ≥ 0.")

    _positive(cfg, "optim.lr")
    _positive(cfg, "loss.stride", int)
    _positive(cfg, "latency.batch_size", int)
    _positive(cfg, "latency.repeats", int)
    _positive(cfg, "trainer.max_epochs", int)
    _positive(cfg, "data.batch_size", int)
    _validate_ranges(cfg)
    _validate_accelerator(cfg)
    if cfg.data.get("synthetic") and not cfg.data.get("root"):
        for key in ("height", "width", "num_train", "num_val", "num_test"):
            _positive(cfg, f"data.synthetic.{key}", int)
        if cfg.data.synthetic.height < 32 or cfg.data.synthetic.width < 32:
            raise ConfigError("data.synthetic", "height and width must be at least 32 pixels.")

    if source == "config":
        _validate_config_baselines(cfg, tasks)

    from mtnas.methods.base import build_method

    return build_method(cfg)


def _in_range(
    cfg: DictConfig,
    key: str,
    low: float,
    high: float = float("inf"),
    *,
    integer: bool = False,
    below_high: bool = False,
    optional: bool = True,
) -> None:
    """`key` is a number in [low, high] (or [low, high) with `below_high`); an int when `integer`."""
    value = OmegaConf.select(cfg, key, default=None)
    if value is None and optional:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = (
        number
        and (not integer or float(value).is_integer())
        and low <= value
        and (value < high if below_high else value <= high)
    )
    if not ok:
        kind = "an integer" if integer else "a number"
        upper = "" if high == float("inf") else f", {'below' if below_high else 'at most'} {high:g}"
        raise ConfigError(key, f"got {value!r}; expected {kind} ≥ {low:g}{upper}.")


def _validate_ranges(cfg: DictConfig) -> None:
    """Range and type of the global numeric keys: no value is silently clipped, truncated or ignored."""
    if cfg.get("study") is not None:  # read by the searching methods' stage=study; checked for every method
        from mtnas.methods.study import StudySettings

        StudySettings.from_config(OmegaConf.to_container(cfg.study, resolve=True))
    _in_range(cfg, "optim.weight_decay", 0)
    _in_range(cfg, "optim.warmup_fraction", 0, 1, below_high=True)
    _choice(cfg, "optim.scheduler", ("cosine", "poly", "none"))
    _choice(cfg, "optim.name", ("adamw", "sgd"))
    _in_range(cfg, "optim.momentum", 0, 1, below_high=True)
    _in_range(cfg, "optim.poly_power", 0)
    _in_range(cfg, "data.eval_batch_size", 1, integer=True)
    _in_range(cfg, "data.num_workers", 0, integer=True)
    _in_range(cfg, "latency.warmup", 0, integer=True)
    _in_range(cfg, "trainer.log_every_n_steps", 1, integer=True)
    _in_range(cfg, "trainer.check_val_every_n_epoch", 1, integer=True)
    _in_range(cfg, "trainer.num_sanity_val_steps", -1, integer=True)
    for split in ("train", "val", "test"):
        key = f"trainer.limit_{split}_batches"
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not (isinstance(value, float) and 0 < value <= 1):
            _in_range(cfg, key, 1, integer=True)  # a batch count, or a fraction in (0, 1]
    devices = OmegaConf.select(cfg, "trainer.devices", default=None)
    if isinstance(devices, int | float) and not isinstance(devices, bool):
        _in_range(cfg, "trainer.devices", 1, integer=True)
    for key, low in (("data.scales", 1.0), ("data.image_size", 32)):
        values = OmegaConf.select(cfg, key, default=None)
        if values is None:
            continue
        values = OmegaConf.to_container(values) if OmegaConf.is_list(values) else values
        what = (
            "scale factors ≥ 1 (zoom-in crops)"
            if key == "data.scales"
            else "two integers ≥ 32: [height, width]"
        )
        if (
            not isinstance(values, list)
            or not values
            or (
                key == "data.image_size" and (len(values) != 2 or not all(isinstance(v, int) for v in values))
            )
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= low for v in values)
        ):
            raise ConfigError(key, f"got {values!r}; expected a list of {what}.")
    if cfg.data.get("synthetic") and not cfg.data.get("root"):
        _in_range(cfg, "data.synthetic.seed", 0, integer=True)
        _in_range(cfg, "data.synthetic.max_objects", 0, integer=True)


def _validate_accelerator(cfg: DictConfig) -> None:
    """A GPU recipe on a machine without CUDA fails here, not deep inside Lightning."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator",
            f"is {accelerator!r} (from `trainer=gpu`/`trainer=ddp` or a *_search recipe) but this "
            "machine has no CUDA GPU visible to torch. Add `trainer=cpu` to run on the CPU "
            "(slow at full recipe size: shrink e.g. `trainer.max_epochs`), or run on a GPU machine.",
        )


def _validate_config_baselines(cfg: DictConfig, tasks: list[str]) -> None:
    from mtnas.tasks import build_tasks

    given = cfg.baselines.metrics or {}
    for t, task in build_tasks(tasks, OmegaConf.to_container(cfg.data.available_tasks)).items():
        for m in task.delta_m_metrics:
            value = OmegaConf.select(given, f"{t}.{m}") if t in given else None
            if not isinstance(value, int | float) or value == 0:
                raise ConfigError(
                    f"baselines.metrics.{t}.{m}",
                    f"with baselines.source=config every Δm metric needs a non-zero reference number "
                    f"(task {t} counts {list(task.delta_m_metrics)}); got {value!r}.",
                )
