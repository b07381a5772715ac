"""`mtnas-report DIR [DIR ...]`: several run folders (or multirun sweep folders) side by side.

Every `results.json` under the given folders is one run. Runs that differ only in `seed` (and in settings that
change no result: logging, progress bars, run folder, stage) form one group; each group's models — the
method's final model, and any reference model trained beside it — get one row with the mean ± std over the
group's seeds of params, FLOPs, latency, every Δm metric of every task, and Δm. The table goes to the
terminal and `comparison.md`, the numbers to `comparison.json`, and test Δm against params to `comparison.png`.

Δm is each run's own, against its own single-task baselines: rows compare fairly when their runs share the
baselines setting (`baselines.source`, the baselines' recipe).

Runs with a study (`stage=study`, `study/study.json`) also get a row each in a second table — Kendall τ of the
search's scores against the retrained archs, searched − hard sharing and searched − best random with their
outcomes — and one tally line per setting: in how many of its seeds the searched arch is better than each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mtnas.errors import MtnasError
from mtnas.report.markdown import markdown_table
from mtnas.report.study import COMPARISONS, difference_outcome, format_stat
from mtnas.utils.io import atomic_write_json, atomic_write_text, read_json

# Overrides that change no result: runs differing only in these are the same setting.
NEUTRAL_PREFIXES = ("seed=", "hydra.", "logger", "trainer.enable_progress_bar", "stage=", "paths.", "study.")
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
    study = run / "study" / "study.json"
    try:
        study_result = read_json(study) if study.is_file() else None
        if study_result is not None and not isinstance(study_result.get("archs"), dict):
            raise ValueError("no `archs`")
    except (ValueError, AttributeError) as e:
        raise MtnasError(f"{study}: not a study file mtnas wrote ({e}).") from None
    return {
        "run": str(run),
        "label": label,
        "seed": _seed(run, overrides),
        "results": results,
        "models": named,
        "study": study_result,
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
    return {"metrics": [f"{t}/{m}" for t, m in metrics], "rows": rows, "studies": compare_studies(runs)}


def _tau(study: Mapping[str, Any], score: str) -> float | None:
    return (study.get(f"{score}_vs_retrained_val") or {}).get("kendall_tau")


def compare_studies(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One row per run with a study, and per setting how often the searched arch beat each comparison."""
    rows, tallies = [], {}
    for run in runs:
        study = run.get("study")
        if not study:
            continue
        row: dict[str, Any] = {
            "name": run["label"],
            "seed": run["seed"],
            "run": run["run"],
            "tau_inherited": _tau(study, "inherited"),
            "tau_finetuned": _tau(study, "finetuned"),
        }
        tally = tallies.setdefault(run["label"], {"runs": 0, **{key: {} for _, key in COMPARISONS}})
        tally["runs"] += 1
        for _, key in COMPARISONS:
            if key in study:
                stat = {k: study[key].get(k) for k in ("mean", "std", "n", "same_arch")}
                row[key] = {**stat, "outcome": difference_outcome(stat)}
                tally[key][row[key]["outcome"]] = tally[key].get(row[key]["outcome"], 0) + 1
        rows.append(row)
    return {"rows": rows, "tallies": tallies}


def study_table(studies: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "model",
        "seed",
        "τ inherited",
        "τ fine-tuned",
        *(f"searched − {what}" for what, _ in COMPARISONS),
    ]
    body = []
    for row in studies["rows"]:
        cells = []
        for _, key in COMPARISONS:
            stat = row.get(key)
            if stat is None:
                cells.append("–")
            elif stat.get("same_arch"):
                cells.append("0 (same arch)")
            else:
                cells.append(f"{format_stat(stat)} ({stat['outcome']})")
        taus = [_cell((row[f"tau_{s}"], None), signed=True) for s in ("inherited", "finetuned")]
        body.append([row["name"], "–" if row["seed"] is None else str(row["seed"]), *taus, *cells])
    return header, body


def tally_lines(studies: Mapping[str, Any]) -> list[str]:
    """Per setting: 'searched better than hard sharing in 1 of 3 runs (tie 1, same arch 1); …'."""
    lines = []
    for name, tally in studies["tallies"].items():
        parts = []
        for what, key in COMPARISONS:
            counts = tally[key]
            if not counts:
                continue
            others = ", ".join(f"{o} {n}" for o, n in sorted(counts.items()) if o != "better")
            parts.append(
                f"better than {what} in {counts.get('better', 0)} of {sum(counts.values())} runs"
                + (f" ({others})" if others else "")
            )
        lines.append(f"{name}: searched arch " + "; ".join(parts))
    return lines


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
        *markdown_table(header, body),
        "",
        "Runs:",
        "",
        *(f"- {row['name']}: {', '.join(row['runs'])}" for row in comparison["rows"]),
        "",
        "![test Δm vs params](comparison.png)",
    ]
    studies = comparison["studies"]
    if studies["rows"]:
        header, body = study_table(studies)
        lines += [
            "",
            "## Studies (`stage=study`)",
            "",
            "Kendall τ of the search's val Δm (inherited weights; fine-tuned, where the search re-scored by a "
            "fine-tune) against the retrained archs' val Δm; searched − hard sharing and searched − best random "
            "in test Δm points, mean ± std over the study's replicates, paired by replicate: better or worse "
            "when beyond twice its standard error, else a tie.",
            "",
            *markdown_table(header, body),
            "",
            *(f"- {line}" for line in tally_lines(studies)),
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


def _rich_table(title: str, header: list[str], body: list[list[str]]):
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title)
    for i, h in enumerate(header):
        if i == 0:  # a long setting label wraps instead of squeezing the numbers
            t.add_column(h, justify="left", overflow="fold", max_width=48)
        else:
            t.add_column(h, justify="right")
    for row in body:
        t.add_row(*(escape(cell) for cell in row))  # labels hold `[...]` (`tasks=[a,b]`), which is not markup
    return t


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mtnas-report",
        description="Compare run folders side by side: every results.json in or under each DIR (a run folder "
        "or a multirun sweep folder); runs differing only in seed are averaged (mean ± std). Runs with a study "
        "(stage=study) also get a row each in a studies table and a per-setting tally of its outcomes.",
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
    from rich.markup import escape

    console = Console(width=160)
    console.print(_rich_table("test split; mean ± std over seeds", *table(comparison)))
    studies = comparison["studies"]
    if studies["rows"]:
        title = "studies: searched vs hard sharing and random (test Δm points, paired by replicate)"
        console.print(_rich_table(title, *study_table(studies)))
        for line in tally_lines(studies):
            console.print(escape(line), highlight=False)
    print(f"Wrote {Path(args.out) / 'comparison.md'}, comparison.json, comparison.png")
