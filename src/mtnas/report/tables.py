"""One results table, three renderings (terminal, report.md, wandb).

Rows are metrics and columns are models, so the table stays narrow for any number of tasks:

    task    metric        single-task   multi-task   change (%)
    —       params (M)    sum of all    …
    semseg  mIoU ↑        …             …            +3.1
    …
    Δm (%) ↑                                          +4.3
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtnas.tasks import Task

_ARROW = {"max": "↑", "min": "↓"}
_SHORT = {
    "miou": "mIoU",
    "pixel_acc": "pixel acc",
    "abs_err": "abs err",
    "rel_err": "rel err",
    "rmse": "RMSE",
    "delta1": "δ<1.25",
    "mean": "mean angle°",
    "median": "median angle°",
    "within_11_25": "% < 11.25°",
    "within_22_5": "% < 22.5°",
    "within_30": "% < 30°",
    "odsf": "odsF",
}
HEADER = ["task", "metric", "single-task", "multi-task", "change (%)"]


def _baseline_for(models: Mapping[str, Any], task: str) -> Mapping[str, Any] | None:
    return models.get(f"baseline/{task}")


def results_rows(results: Mapping[str, Any], tasks: Mapping[str, Task]) -> tuple[list[str], list[list[Any]]]:
    models = results["models"]
    mtl = models["multitask"]
    baselines = [info for name, info in models.items() if name.startswith("baseline/")]
    rows: list[list[Any]] = []
    costs = [("params (M) ↓", "params", 1e6), ("GFLOPs ↓", "flops", 1e9), ("latency (ms) ↓", "latency_ms", 1)]
    for label, key, scale in costs:
        if key not in mtl or any(key not in b for b in baselines):
            continue  # results written before latency was reported
        # Against all single-task models together: what one multi-task model saves.
        single = sum(b[key] for b in baselines) / scale if baselines else None
        change = -100 * (mtl[key] / scale - single) / single if single else None
        rows.append(["all", label, single, mtl[key] / scale, change])
    ref = results.get("baselines_test", {})
    for t, task in tasks.items():
        for m in task.delta_m_metrics:
            direction = task.directions[m]
            base = ref.get(t, {}).get(m)
            value = mtl["test"].get(t, {}).get(m)
            change = None
            if base not in (None, 0) and value is not None:
                change = (1 if direction == "max" else -1) * 100 * (value - base) / abs(base)
            rows.append([t, f"{_SHORT.get(m, m)} {_ARROW[direction]}", base, value, change])
    rows.append(["Δm (%) ↑", results["delta_m_convention"], None, None, mtl.get("delta_m")])
    return list(HEADER), rows


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:+.2f}" if signed else f"{v:.4g}"
    return str(v)


def _caption(results: Mapping[str, Any]) -> str:
    return (
        f"{results['experiment']} on {results['dataset']}, test split. Single-task reference: "
        f"{results['baselines_source']!r}. change = signed relative change (positive = better)."
    )


def _formatted(rows: list[list[Any]]) -> list[list[str]]:
    return [[_fmt(v, signed=(i == 4)) for i, v in enumerate(row)] for row in rows]


def results_markdown(results: Mapping[str, Any], tasks: Mapping[str, Task]) -> str:
    header, rows = results_rows(results, tasks)
    lines = [f"# {results['experiment']}", "", _caption(results), ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in _formatted(rows)]
    mtl = results["models"]["multitask"]
    lines += [
        "",
        f"Δm per task: {mtl['delta_m_per_task']:+.2f} %, per metric: {mtl['delta_m_per_metric']:+.2f} %.",
    ]
    return "\n".join(lines) + "\n"


def print_results(results: Mapping[str, Any], tasks: Mapping[str, Task]) -> None:
    from rich.console import Console
    from rich.table import Table

    header, rows = results_rows(results, tasks)
    table = Table(title=_caption(results))
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < 2 else "right")
    for row in _formatted(rows):
        table.add_row(*row)
    Console(width=100).print(table)
