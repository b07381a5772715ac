"""`mtnas-report DIR [DIR ...]`: several run folders (or multirun sweep folders) side by side.

Every `results.json` under the given folders is one run. Runs that differ only in `seed` (and in settings that
change no result: logging, progress bars, run folder, stage) form one group; each group's models — the
method's final model, and any reference model trained beside it — get one row with the mean ± std over the
group's seeds of params, FLOPs, latency, every Δm metric of every task, and Δm. The table goes to the
terminal and `comparison.md`, the numbers to `comparison.json`, and test Δm against params to `comparison.png`.

Δm is each run's own, against its own single-task baselines: rows compare fairly when their runs share the
baselines setting (`baselines.source`, the baselines' recipe).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mtnas.errors import MtnasError
from mtnas.utils.io import atomic_write_json, atomic_write_text, read_json

# Overrides that change no result: runs differing only in these are the same setting.
NEUTRAL_PREFIXES = ("seed=", "hydra.", "logger", "trainer.enable_progress_bar", "stage=", "paths.")
COSTS = (("params", "params (M)", 1e6), ("flops", "GFLOPs", 1e9), ("latency_ms", "latency (ms)", 1.0))


def find_runs(folders: Sequence[str | Path]) -> list[Path]:
    """Run folders (those holding a `results.json`) in or under each folder, in a stable order."""
    runs: list[Path] = []
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise MtnasError(f"{folder}: not a folder (expected a run folder or a multirun sweep folder).")
        found = (
            [folder]
            if (folder / "results.json").is_file()
            else sorted(p.parent for p in folder.rglob("results.json"))
        )
        if not found:
            raise MtnasError(
                f"{folder}: no results.json in it or below it: has the run's evaluate stage run? "
                "(`mtnas ... stage=evaluate hydra.run.dir=<run folder>`)"
            )
        runs += [r for r in found if r not in runs]
    return runs


def _overrides(run: Path) -> list[str]:
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    import yaml

    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]


def _seed(run: Path, overrides: Iterable[str]) -> int | None:
    for o in overrides:
        if o.startswith("seed="):
            return int(o.split("=", 1)[1])
    path = run / ".hydra" / "config.yaml"
    if path.is_file():
        import yaml

        return (yaml.safe_load(path.read_text()) or {}).get("seed")
    return None


def read_run(run: Path) -> dict[str, Any]:
    """One run's results and the setting it belongs to."""
    try:
        results = read_json(run / "results.json")
        models = results["models"]
        final = models["multitask"]
    except (ValueError, KeyError, TypeError) as e:
        raise MtnasError(f"{run / 'results.json'}: not a results file mtnas wrote ({e}).") from None
    overrides = _overrides(run)
    setting = [o for o in overrides if not o.startswith(NEUTRAL_PREFIXES)]
    label = " ".join(setting) or results.get("experiment", run.name)
    named = {"": final, **{name: models[name] for name in results.get("references", [])}}
    return {
        "run": str(run),
        "label": label,
        "seed": _seed(run, overrides),
        "results": results,
        "models": named,
    }


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def compare(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rows (one per group and model) with mean and std over seeds, and the columns they fill."""
    groups: dict[tuple[str, str], list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    for run in runs:
        for model_name, model in run["models"].items():
            name = f"{run['label']} · {model_name}" if model_name else run["label"]
            groups.setdefault((name, run["results"].get("method", "")), []).append((run, model))
    metrics: list[tuple[str, str]] = []  # (task, metric) in first-seen order
    for run in runs:
        for task, names in run["results"].get("delta_m_metrics", {}).items():
            for m in names:
                if (task, m) not in metrics:
                    metrics.append((task, m))
    rows = []
    for (name, method), members in groups.items():
        row: dict[str, Any] = {
            "name": name,
            "method": method,
            "seeds": sorted(r["seed"] for r, _ in members if r["seed"] is not None),
            "runs": [r["run"] for r, _ in members],
            "dataset": members[0][0]["results"].get("dataset"),
        }
        for key, _, scale in COSTS:
            row[key] = _mean_std([m[key] / scale if key in m else None for _, m in members])
        for task, metric in metrics:
            row[f"{task}/{metric}"] = _mean_std([m["test"].get(task, {}).get(metric) for _, m in members])
        row["delta_m"] = _mean_std([m.get("delta_m") for _, m in members])
        rows.append(row)
    return {"metrics": [f"{t}/{m}" for t, m in metrics], "rows": rows}


def _cell(stat: tuple[float | None, float | None], signed: bool = False) -> str:
    mean, std = stat
    if mean is None:
        return "–"
    text = f"{mean:+.2f}" if signed else f"{mean:.4g}"
    return text if std is None else f"{text} ± {std:.2g}"


def table(comparison: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "seeds", *(label for _, label, _ in COSTS), *comparison["metrics"], "Δm (%)"]
    body = []
    for row in comparison["rows"]:
        body.append(
            [
                row["name"],
                ",".join(str(s) for s in row["seeds"]) or "–",
                *(_cell(row[key]) for key, _, _ in COSTS),
                *(_cell(row[m]) for m in comparison["metrics"]),
                _cell(row["delta_m"], signed=True),
            ]
        )
    return header, body


def markdown(comparison: Mapping[str, Any]) -> str:
    header, body = table(comparison)
    lines = [
        "# Comparison",
        "",
        "Test split; mean ± std over the seeds of each setting (runs differing only in `seed`). Δm is each "
        "run's own, against its own single-task baselines.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in body),
        "",
        "Runs:",
        "",
        *(f"- {row['name']}: {', '.join(row['runs'])}" for row in comparison["rows"]),
        "",
        "![test Δm vs params](comparison.png)",
    ]
    return "\n".join(lines) + "\n"


def plot(comparison: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for i, row in enumerate(comparison["rows"]):
        (x, xerr), (y, yerr) = row["params"], row["delta_m"]
        if x is None or y is None:
            continue
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=f"C{i % 10}", capsize=3, label=row["name"])
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("params (M)")
    ax.set_ylabel("test Δm (%)")
    ax.set_title("mean ± std over seeds")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)


def report(folders: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Read every run under `folders`, write comparison.{md,json,png} into `out`, return the comparison."""
    comparison = compare([read_run(r) for r in find_runs(folders)])
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "comparison.json", comparison)
    atomic_write_text(out / "comparison.md", markdown(comparison))
    plot(comparison, out / "comparison.png")
    return comparison


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mtnas-report",
        description="Compare run folders side by side: every results.json in or under each DIR (a run folder "
        "or a multirun sweep folder); runs differing only in seed are averaged (mean ± std).",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run folders or multirun sweep folders")
    parser.add_argument(
        "--out", default=".", help="folder for comparison.md, comparison.json, comparison.png (default: .)"
    )
    args = parser.parse_args(argv)
    try:
        comparison = report(args.dirs, args.out)
    except MtnasError as err:
        print(f"mtnas-report: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    from rich.console import Console
    from rich.table import Table

    header, body = table(comparison)
    t = Table(title="test split; mean ± std over seeds")
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in body:
        t.add_row(*row)
    Console(width=160).print(t)
    print(f"Wrote {Path(args.out) / 'comparison.md'}, comparison.json, comparison.png")
