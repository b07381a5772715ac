"""The study's renderings (`mtnas.methods.study`): its summary lines, table, markdown and plot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtnas.report.markdown import markdown_table


def format_stat(stat: Mapping[str, Any], signed: bool = True) -> str:
    """A `mean_std` summary as "+0.49 ± 0.10" ("+0.49" without a std, "–" without a mean)."""
    if stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:+.2f}" if signed else f"{stat['mean']:.3g}"
    return text if stat.get("std") is None else f"{text} ± {stat['std']:.2f}"


# The study's paired comparisons: (the role of the arch compared with, the result key of searched − it).
COMPARISONS = (
    ("hard sharing", "searched_minus_hard_sharing"),
    ("best random", "searched_minus_random"),
)


def difference_outcome(stat: Mapping[str, Any]) -> str:
    """How searched − other (paired by replicate) reads: `better` or `worse` when its mean is more than twice its
    standard error (std / √n over the replicates) from 0, else `tie`; `same arch` when the search returned that
    very arch; `one replicate` when there is no spread to judge by."""
    if stat.get("same_arch"):
        return "same arch"
    if stat.get("mean") is None or stat.get("std") is None or stat.get("n", 0) < 2:
        return "one replicate"
    margin = 2 * stat["std"] / stat["n"] ** 0.5
    if stat["mean"] - margin > 0:
        return "better"
    if stat["mean"] + margin < 0:
        return "worse"
    return "tie"


OUTCOME_PHRASES = {
    "better": "better, beyond 2 standard errors",
    "worse": "worse, beyond 2 standard errors",
    "tie": "a tie, within 2 standard errors",
    "one replicate": "one replicate, no spread to judge by",
}


def study_lines(result: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, score in (("inherited", "inherited"), ("finetuned", "fine-tuned")):
        corr = result.get(f"{key}_vs_retrained_val")
        if corr and corr["kendall_tau"] is not None:
            lines.append(
                f"{score} vs retrained val Δm over {len(result['archs'])} archs: "
                f"Kendall τ {corr['kendall_tau']:.2f}, Spearman ρ {corr['spearman_rho']:.2f}"
            )
    for what, key in COMPARISONS:
        if key not in result:
            continue
        stat = result[key]
        several = stat.get("of", 1) > 1  # the best by retrained val Δm of several archs with that role
        if stat.get("same_arch"):
            best = f", the best by val Δm of {stat['of']}" if several else ""
            lines.append(f"searched − {what}: 0 (the searched arch is the {what} arch{best})")
        else:
            best = f" (the best by val Δm of {stat['of']}: {stat['with']})" if several else ""
            lines.append(
                f"searched − {what}{best}: {format_stat(stat)} test Δm points (n = {stat['n']}): "
                + OUTCOME_PHRASES[difference_outcome(stat)]
            )
    return lines


STUDY_HEADER = ["arch", "role", "params (M)", "inherited val Δm", "retrained val Δm", "test Δm"]


def _finetuned(result: Mapping[str, Any]) -> bool:
    return "finetuned_vs_retrained_val" in result


def study_header(result: Mapping[str, Any]) -> list[str]:
    return STUDY_HEADER[:4] + ["fine-tuned val Δm"] * _finetuned(result) + STUDY_HEADER[4:]


def study_rows(result: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for tag, c in sorted(result["archs"].items(), key=lambda kv: kv[1]["cost"]["params"]):
        finetuned = [f"{c['finetuned_delta_m']:+.2f}"] if _finetuned(result) else []
        rows.append(
            [
                tag,
                ", ".join(c["roles"]),
                f"{c['cost']['params'] / 1e6:.3f}",
                f"{c['inherited_delta_m']:+.2f}",
                *finetuned,
                format_stat(c["val"]),
                format_stat(c["test_summary"]),
            ]
        )
    return rows


def study_markdown(result: Mapping[str, Any], image: str = "study/study.png") -> str:
    seeds = result["settings"]["seeds"]
    lines = [
        "## Study: does the search work?",
        "",
        f"Each arch retrained with the run's recipe, {seeds} replicate(s); mean ± std. "
        "Inherited = val Δm with supernet weights, as the search saw it"
        + (
            "; fine-tuned = after the search's short fine-tune (`search.finetune_*`), as it selected."
            if _finetuned(result)
            else "."
        ),
        "",
        *(f"- {line}" for line in study_lines(result)),
        "",
        *markdown_table(study_header(result), study_rows(result)),
        "",
        f"![inherited vs retrained Δm]({image})",
    ]
    return "\n".join(lines) + "\n"


def plot_study(result: Mapping[str, Any], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    colours = {"searched": "C3", "hard sharing": "C2", "best random": "C1", "spread": "C0", "front": "C4"}
    for c in result["archs"].values():
        if c["val"]["mean"] is None:
            continue
        role = c["roles"][0]
        ax.errorbar(
            c["inherited_delta_m"],
            c["val"]["mean"],
            yerr=c["val"]["std"],
            fmt="o",
            capsize=3,
            color=colours.get(role, "C0"),
            label=role,
        )
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="best")
    corr = result["inherited_vs_retrained_val"]
    tau = "–" if corr["kendall_tau"] is None else f"{corr['kendall_tau']:.2f}"
    ax.set_title(f"Kendall τ {tau}")
    ax.set_xlabel("val Δm (%) with inherited supernet weights")
    ax.set_ylabel("val Δm (%) after retraining")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
