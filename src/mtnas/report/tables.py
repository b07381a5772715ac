"""One results table, three renderings (terminal, report.md, wandb); for NAS runs, a search section
(the chosen arch and the Pareto front of every evaluated subnet, as the method's summary describes them).

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

from mtnas.report.markdown import markdown_table
from mtnas.tasks import Task

_ARROW = {"max": "↑", "min": "↓"}
_SHORT = {
    "map": "mAP",
    "map_50": "mAP@.5",
    "map_75": "mAP@.75",
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
    "maxf": "maxF",
    "top1": "top-1 %",
    "top5": "top-5 %",
    "kl": "KL",
}
_SOURCE = {"run": "baselines trained in this run", "config": "numbers given in config (baselines.metrics)"}
HEADER = ["task", "metric", "single-task", "multi-task", "change (%)"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _source(results: Mapping[str, Any]) -> str:
    if results.get("baselines_dir"):
        return f"baselines trained in {results['baselines_dir']}"
    return _SOURCE.get(results["baselines_source"], results["baselines_source"])


def _baseline_for(models: Mapping[str, Any], task: str) -> Mapping[str, Any] | None:
    return models.get(f"baseline/{task}")


def results_rows(results: Mapping[str, Any], tasks: Mapping[str, Task]) -> tuple[list[str], list[list[Any]]]:
    """The table's header and rows; each reference model (`results["references"]`, e.g. hard sharing beside
    MQTransformer) adds a value and a change column after the multi-task model's."""
    models = results["models"]
    compared = [models["multitask"], *(models[name] for name in results.get("references", []))]
    header = list(HEADER)
    for name in results.get("references", []):
        header += [name, "change (%)"]
    baselines = [info for name, info in models.items() if name.startswith("baseline/")]
    rows: list[list[Any]] = []
    costs = [("params (M) ↓", "params", 1e6), ("GFLOPs ↓", "flops", 1e9), ("latency (ms) ↓", "latency_ms", 1)]
    for label, key, scale in costs:
        if any(key not in m for m in compared) or any(key not in b for b in baselines):
            continue  # results written before latency was reported
        # Against all single-task models together: what one multi-task model saves.
        single = sum(b[key] for b in baselines) / scale if baselines else None
        row = ["all", label, single]
        for m in compared:
            row += [m[key] / scale, -100 * (m[key] / scale - single) / single if single else None]
        rows.append(row)
    ref = results.get("baselines_test", {})
    for t, task in tasks.items():
        for metric in task.delta_m_metrics:
            direction = task.directions[metric]
            base = ref.get(t, {}).get(metric)
            row = [t, f"{_SHORT.get(metric, metric)} {_ARROW[direction]}", base]
            for m in compared:
                value = m["test"].get(t, {}).get(metric)
                change = None
                if base not in (None, 0) and value is not None:
                    change = (1 if direction == "max" else -1) * 100 * (value - base) / abs(base)
                row += [value, change]
            rows.append(row)
    rows.append(
        [
            "Δm (%) ↑",
            results["delta_m_convention"],
            None,
            *sum(([None, m.get("delta_m")] for m in compared), []),
        ]
    )
    return header, rows


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:+.2f}" if signed else f"{v:.4g}"
    return str(v)


def _caption(results: Mapping[str, Any]) -> str:
    return (
        f"{results['experiment']} on {results['dataset']}, test split. Single-task reference: "
        f"{_source(results)}. "
        "change = signed relative change (positive = better)."
    )


def _formatted(rows: list[list[Any]]) -> list[list[str]]:
    # Columns: task, metric, single-task, then (value, change) per compared model; changes are signed.
    return [[_fmt(v, signed=(i >= 4 and i % 2 == 0)) for i, v in enumerate(row)] for row in rows]


def search_summary(search: Mapping[str, Any]) -> list[str]:
    """Sentences about the search: how many subnets, the budget, the chosen arch and its searched score."""
    budget = ", ".join(f"{k}={v:g}" for k, v in search.get("budget", {}).items()) or "none"
    if search["evaluated"]:
        lines = [
            f"{_count(search['evaluated'], 'subnet')} evaluated (val Δm with inherited supernet weights); "
            f"budget: {budget}."
        ]
        if search.get("hypervolume") is not None:
            lines.append(
                f"Hypervolume of the front (Δm vs {', '.join(search['objectives'])}; reference Δm −100 % and "
                f"1.1 × the largest arch's cost, search/pareto.json): {search['hypervolume']:.4f}."
            )
    else:
        lines = ["No search in this run folder."]
    if search.get("arch"):
        if search.get("searched"):
            s, c = search["searched"], search["searched"]["cost"]
            lines.append(
                f"Chosen arch (arch.yaml): {search['arch_line']}; "
                f"searched val Δm {s['delta_m']:+.2f} %, {c['params'] / 1e6:.3f} M params."
            )
        else:
            lines.append(f"Arch ({search.get('arch_file', 'arch.yaml')}): {search['arch_line']}.")
    return lines


PARETO_HEADER = ["params (M)", "GFLOPs", "val Δm (%)", "arch"]


def pareto_rows(search: Mapping[str, Any]) -> list[list[str]]:
    """The Δm-vs-params front, smallest first; the chosen arch is marked."""
    rows = []
    for r in search.get("pareto_params", []):
        mark = "  ◀ chosen" if r["arch"] == search.get("arch") else ""
        rows.append(
            [
                f"{r['cost']['params'] / 1e6:.3f}",
                f"{r['cost']['flops'] / 1e9:.4f}",
                f"{r['delta_m']:+.2f}",
                r["line"] + mark,
            ]
        )
    return rows


def search_markdown(search: Mapping[str, Any]) -> str:
    front = pareto_rows(search)
    lines = ["## Search", "", *search_summary(search), ""]
    if not front:
        return "\n".join(lines)
    lines += [
        f"Pareto front, val Δm vs params ({_count(len(front), 'subnet')}; all fronts in search/pareto.json):",
        "",
    ]
    lines += markdown_table(PARETO_HEADER, front)
    lines += ["", "![Pareto front](pareto.png)"]
    text = "\n".join(lines) + "\n"
    if search.get("study"):
        from mtnas.report.study import study_markdown

        text += "\n" + study_markdown(search["study"])
    return text


def results_markdown(results: Mapping[str, Any], tasks: Mapping[str, Task]) -> str:
    header, rows = results_rows(results, tasks)
    lines = [f"# {results['experiment']}", "", _caption(results), ""]
    lines += markdown_table(header, _formatted(rows))
    mtl = results["models"]["multitask"]
    lines += [
        "",
        f"Δm per task: {mtl['delta_m_per_task']:+.2f} %, per metric: {mtl['delta_m_per_metric']:+.2f} %.",
    ]
    for name in results.get("references", []):
        ref = results["models"][name]
        lines.append(
            f"{name} (reference/, same recipe and baselines): Δm per task {ref['delta_m_per_task']:+.2f} %, "
            f"per metric {ref['delta_m_per_metric']:+.2f} %."
        )
    text = "\n".join(lines) + "\n"
    if results.get("search"):
        text += "\n" + search_markdown(results["search"])
    return text


def print_results(results: Mapping[str, Any], tasks: Mapping[str, Task]) -> None:
    from rich.console import Console
    from rich.table import Table

    header, rows = results_rows(results, tasks)
    table = Table(title=_caption(results))
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < 2 else "right")
    for row in _formatted(rows):
        table.add_row(*row)
    console = Console(width=100)
    if results.get("search"):
        search = results["search"]
        front = Table(title="Pareto front: val Δm vs params (search/pareto.json, pareto.png)")
        for i, h in enumerate(PARETO_HEADER):
            front.add_column(h, justify="right" if i < 3 else "left")
        for row in pareto_rows(search):
            front.add_row(*row)
        if front.row_count:
            console.print(front)
        for line in search_summary(search):
            console.print(line)
    console.print(table)
