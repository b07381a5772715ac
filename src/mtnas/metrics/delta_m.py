"""Δm: the average relative improvement of a multi-task model over single-task baselines.

    Δm = 100 / T · Σ_t (1/|M_t|) Σ_{m∈M_t} s_m · (M_m − B_m) / B_m      (convention "per_task")
    Δm = 100 / |M| · Σ_{m∈M} s_m · (M_m − B_m) / B_m                    (convention "per_metric")

with s_m = +1 when higher is better and −1 when lower is better. Both conventions appear in published
tables (per-task averaging weighs each task equally; per-metric weighs tasks with many metrics more).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from mtnas.errors import MtnasError

Convention = Literal["per_task", "per_metric"]
CONVENTIONS = ("per_task", "per_metric")


def delta_m(
    metrics: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, Mapping[str, float]],
    directions: Mapping[str, Mapping[str, str]],
    convention: Convention = "per_task",
) -> float:
    """`directions[task][metric]` is "max" or "min" for exactly the metrics that count in Δm."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown Δm convention {convention!r}; expected one of {CONVENTIONS}")
    per_task: list[list[float]] = []
    for task, task_dirs in directions.items():
        terms = []
        for name, direction in task_dirs.items():
            try:
                value, base = float(metrics[task][name]), float(baselines[task][name])
            except KeyError as e:
                raise MtnasError(
                    f"Δm needs metric `{task}/{name}` in both the model's results and the baselines; "
                    f"missing {e}. Check `baselines.metrics` or rerun the baselines stage."
                ) from None
            if base == 0:
                raise MtnasError(zero_baseline_message(task, name, baselines[task]))
            sign = 1.0 if direction == "max" else -1.0
            terms.append(sign * (value - base) / abs(base))
        per_task.append(terms)
    if not per_task:
        return 0.0
    if convention == "per_task":
        return 100.0 * sum(sum(t) / len(t) for t in per_task) / len(per_task)
    flat = [x for t in per_task for x in t]
    return 100.0 * sum(flat) / len(flat)


def zero_baseline_message(task: str, metric: str, task_baselines: Mapping[str, float]) -> str:
    """Why Δm cannot use a baseline metric that is 0, and the two ways out."""
    others = [m for m in task_baselines if m != metric and float(task_baselines[m]) != 0]
    fix = (
        f"or count other metrics of `{task}` in Δm: `++data.available_tasks.{task}.delta_m_metrics=[{others[0]}]`"
        f" (it has {others})"
        if others
        else f"or leave `{task}` out of `tasks`"
    )
    return (
        f"Δm: the single-task baseline's `{task}/{metric}` is 0, so a relative change against it is "
        "undefined. Usually that baseline learnt nothing measurable on this metric (too few epochs, or too "
        f"few val samples for it). Train the baselines longer (`trainer.max_epochs`), {fix}, or give "
        "reference numbers with baselines.source=config."
    )


def check_baselines(
    baselines: Mapping[str, Mapping[str, float]], directions: Mapping[str, Mapping[str, str]]
) -> None:
    """Raise before any long stage when a baseline metric that counts in Δm is 0 (Δm would be undefined)."""
    for task, task_dirs in directions.items():
        for name in task_dirs:
            value = baselines.get(task, {}).get(name)
            if value is not None and float(value) == 0:
                raise MtnasError(zero_baseline_message(task, name, baselines[task]))
