"""`pareto.png`: every evaluated subnet's val Δm against params, with the Δm-vs-params front."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mtnas.search.pareto import pareto_front
from mtnas.search.population import PopulationLog


def plot_pareto(
    log: PopulationLog, path: Path, results: Mapping[str, Any] | None = None, experiment: str = ""
) -> None:
    """Written after the search, and again after evaluation with the test Δm in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not len(log):
        return
    recs = list(log.records.values())
    front = pareto_front(recs, "params")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter(
        [r["cost"]["params"] / 1e6 for r in recs],
        [r["delta_m"] for r in recs],
        s=10,
        alpha=0.4,
        label=f"evaluated subnets ({len(recs)})",
    )
    ax.plot(
        [r["cost"]["params"] / 1e6 for r in front],
        [r["delta_m"] for r in front],
        "o-",
        color="C3",
        label=f"Pareto front ({len(front)})",
    )
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("params (M)")
    ax.set_ylabel("val Δm (%) with inherited weights")
    if results:
        mtl = results["models"]["multitask"]
        ax.set_title(f"{results['experiment']}: chosen arch retrained, test Δm {mtl['delta_m']:+.2f} %")
    else:
        ax.set_title(f"{experiment}: search (val Δm with inherited weights)")
    ax.legend(loc="best")  # a fixed corner can hide a front point
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
