"""Task types. Adding one = a file here with a `Task` subclass + an entry in `TASK_TYPES`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtnas.errors import ConfigError
from mtnas.tasks.base import Task
from mtnas.tasks.classification import ClassificationTask
from mtnas.tasks.depth import DepthTask
from mtnas.tasks.detection import DetectionTask
from mtnas.tasks.edge import EdgeTask
from mtnas.tasks.normal import NormalTask
from mtnas.tasks.regression import RegressionTask, VectorRegressionTask
from mtnas.tasks.saliency import SaliencyTask
from mtnas.tasks.semseg import SemsegTask

TASK_TYPES: dict[str, type[Task]] = {
    t.type: t
    for t in (
        SemsegTask,
        DepthTask,
        NormalTask,
        EdgeTask,
        RegressionTask,
        SaliencyTask,
        ClassificationTask,
        VectorRegressionTask,
        DetectionTask,
    )
}


def build_task(name: str, spec: Mapping[str, Any]) -> Task:
    """`spec` is a dataset's entry in `data.available_tasks`: `{type: semseg, num_classes: 13, ...}`."""
    params = dict(spec)
    type_ = params.pop("type", name)
    for reader_key in ("source", "optional", "value_range"):  # for the reader and `mtnas-data check` only
        params.pop(reader_key, None)
    if type_ not in TASK_TYPES:
        raise ConfigError(
            f"data.available_tasks.{name}.type",
            f"unknown task type {type_!r}; known types are {sorted(TASK_TYPES)}.",
        )
    try:
        return TASK_TYPES[type_](name, **params)
    except TypeError as e:
        raise ConfigError(
            f"data.available_tasks.{name}", f"bad parameters for a {type_} task: {e}."
        ) from None


def image_level(tasks: Mapping[str, Task]) -> frozenset[str]:
    """Tasks predicted once per image (pooled heads) rather than per pixel."""
    return frozenset(t for t, task in tasks.items() if not task.dense)


def build_tasks(selected: list[str], available: Mapping[str, Mapping[str, Any]]) -> dict[str, Task]:
    unknown = [t for t in selected if t not in available]
    if unknown:
        raise ConfigError("tasks", f"unknown task(s) {unknown}; this dataset provides {sorted(available)}.")
    return {name: build_task(name, available[name]) for name in selected}


__all__ = ["TASK_TYPES", "Task", "build_task", "build_tasks", "image_level"]
