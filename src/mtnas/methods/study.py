"""`stage=study`: does the search work? Retrain archs and see whether the supernet ranked them right.

After a run's search (its `search/population.jsonl`, `arch.yaml`), the study retrains, with the run's own
retrain recipe, over `study.seeds` replicates each:

- `study.archs` archs spread evenly over the params range of the search's population (within the budget);
- the searched arch;
- the best arch of an *independent* random search (its own random stream, as many candidates as the search
  evaluated, scored the same way: `study/random.jsonl`), when `study.random`;
- the hard-sharing arch of the space (no task-specific layer) closest in params to the searched one, and every
  other within `study.hard_sharing_band` × its params (the comparison is with the best of them by retrained val Δm);
- the `study.front` best members of the search's Δm-vs-params front (0 by default).

A cheap check of whether to trust a front: `stage=study study.front=5 study.archs=0 study.random=false
study.seeds=1 study.max_epochs=2` retrains the front's top 5 for two epochs and prints τ.

It reports Kendall τ and Spearman ρ between the val Δm each arch had with inherited supernet weights (and,
when the search re-scores its best by a short fine-tune, `search.finetune_top`, after that fine-tune) and its
val Δm after retraining (mean over replicates), the test Δm mean ± std per arch, and searched − hard sharing and
searched − random, paired by replicate (replicate k of every arch trains as a run with `seed` + k would: initial
weights, data order and augmentation; replicate 0 is thus the run's own `retrain/` again). Output: `study/study.json`, `study/study.md`,
`study/study.png` (inherited vs retrained Δm). Every retrain is a unit with its own folder
(`study/<arch tag>/seed<k>/`): a killed study resumes where it stopped. Under DDP the retrains are spread
across the processes, each trained by one process on its own device (`Run.alone`).
"""

from __future__ import annotations

import math
import random
import shutil
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mtnas.errors import ConfigError, MtnasError
from mtnas.metrics.delta_m import delta_m
from mtnas.report.study import COMPARISONS, difference_outcome, plot_study, study_lines, study_markdown
from mtnas.run import Unit, unit_seed
from mtnas.search.pareto import pareto_front, select
from mtnas.search.population import PopulationLog, arch_digest, arch_key
from mtnas.utils.checks import non_negative_number, optional_positive_int, positive_int
from mtnas.utils.distributed import rank_and_world, spread_across_processes

if TYPE_CHECKING:
    from mtnas.run import Run


@dataclass(frozen=True)
class StudySettings:
    archs: int = 4
    front: int = 0  # also the best `front` members of the search's Δm-vs-params front
    seeds: int = 3  # replicates: seed, seed + 1, …
    max_epochs: int | None = None  # None: the run's retrain.max_epochs
    random: bool = True
    # Hard sharing: the uniform arch nearest the searched params, and every other within this fraction of them.
    hard_sharing_band: float = 0.05

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> StudySettings:
        cfg = dict(cfg or {})
        if not isinstance(cfg.get("random", True), bool):
            raise ConfigError("study.random", f"got {cfg['random']!r}; expected true or false.")
        return cls(
            archs=positive_int("study.archs", cfg.get("archs", 4), minimum=0),
            front=positive_int("study.front", cfg.get("front", 0), minimum=0),
            seeds=positive_int("study.seeds", cfg.get("seeds", 3)),
            max_epochs=optional_positive_int("study.max_epochs", cfg.get("max_epochs")),
            random=cfg.get("random", True),
            hard_sharing_band=non_negative_number(
                "study.hard_sharing_band", cfg.get("hard_sharing_band", 0.05)
            ),
        )


def rank_correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Kendall τ (τ-b) and Spearman ρ of two paired samples; None with fewer than 3 pairs or a constant one."""
    from scipy import stats

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return {"kendall_tau": None, "spearman_rho": None}
    return {
        "kendall_tau": float(stats.kendalltau(x, y).statistic),
        "spearman_rho": float(stats.spearmanr(x, y).statistic),
    }


def spread_by_cost(
    records: Sequence[Mapping[str, Any]], k: int, key: str = "params"
) -> list[Mapping[str, Any]]:
    """`k` records evenly spaced over the range of `cost[key]` (the cheapest and the costliest included)."""
    ordered = sorted(records, key=lambda r: (r["cost"][key], -r["delta_m"]))
    if k <= 0 or not ordered:
        return []
    if k == 1:
        return [ordered[len(ordered) // 2]]
    picks = [ordered[round(i * (len(ordered) - 1) / (k - 1))] for i in range(k)]
    return list({arch_key(r["arch"]): r for r in picks}.values())


def mean_std(values: Sequence[float]) -> dict[str, float | int | None]:
    values = list(values)
    return {
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def compared_with(candidates: Mapping[str, Mapping[str, Any]], role: str) -> str | None:
    """The tag of the arch a comparison is with: of the candidates with `role`, the best by mean retrained val
    Δm (several hard-sharing archs near the searched cost: a person would keep the best on val, never on test);
    the first on a tie, None when no candidate has the role."""
    having = [tag for tag, c in candidates.items() if role in c["roles"]]
    val = lambda tag: (candidates[tag].get("val") or {}).get("mean")  # noqa: E731
    return max(having, key=lambda tag: -math.inf if val(tag) is None else val(tag), default=None)


def paired_differences(candidates: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Searched − hard sharing and searched − best random in test Δm, paired by replicate, each with its
    `outcome` (`difference_outcome`) and the tag it is `with` (`compared_with`, among `of` archs of that role).
    When the searched arch is itself that arch (one candidate with both roles), the difference is 0 by
    construction, marked `same_arch`."""
    searched = candidates["searched"]
    out: dict[str, dict[str, Any]] = {}
    for role, key in COMPARISONS:
        tag = compared_with(candidates, role)
        if tag is None:
            continue
        if tag == "searched":
            out[key] = {**mean_std([0.0] * len(searched["test_delta_m"])), "same_arch": True}
        else:
            other = candidates[tag]["test_delta_m"]
            out[key] = mean_std([a - b for a, b in zip(searched["test_delta_m"], other, strict=True)])
        out[key]["outcome"] = difference_outcome(out[key])
        out[key]["with"] = tag
        out[key]["of"] = sum(role in c["roles"] for c in candidates.values())
    return out


class Study:
    """The study of one searching method's run (`method.hard_sharing_archs`, `method.problem` are its hooks)."""

    def __init__(self, method, run: Run, settings: StudySettings):
        self.method, self.run, self.settings = method, run, settings
        self.dir = run.out / "study"

    # -- which archs ----------------------------------------------------------------------------------
    def candidates(self) -> dict[str, dict[str, Any]]:
        method, run = self.method, self.run
        log = PopulationLog(method.search_dir(run) / "population.jsonl")
        records = method.within_budget(log)
        if not records or not method.arch_path(run).exists():
            raise MtnasError(
                f"{method.search_dir(run) / 'population.jsonl'}: no search to study in this run folder; run the "
                "search first (stage=all, or stage=search)."
            )
        searched = method.space.read_arch(method.arch_path(run))
        out: dict[str, dict[str, Any]] = {}

        def add(tag: str, role: str, record: Mapping[str, Any]) -> None:
            same = next((c for c in out.values() if arch_key(c["arch"]) == arch_key(record["arch"])), None)
            if same is not None:  # the same arch in two roles is retrained once
                same["roles"].append(role)
                return
            out[tag] = {
                "arch": record["arch"],
                "roles": [role],
                "cost": record["cost"],
                "inherited_delta_m": record.get("inherited_delta_m", record["delta_m"]),
                "line": method.describe_arch(record["arch"]),
            }

        extra_log = PopulationLog(self.dir / "scored.jsonl", writable=run.is_writer)
        with run.progress("study: scoring the study's archs with inherited weights") as progress:
            scorer = method.problem(run, extra_log, random.Random(unit_seed(run.seed, "study")), progress)
            add("searched", "searched", log.get(searched.to_dict()) or scorer.score([searched])[0])
            for i, hard in enumerate(
                method.hard_sharing_archs(run, searched, self.settings.hard_sharing_band)
            ):
                tag = "hard-sharing" + (f"-{i}" if i else "")  # the nearest in params first
                add(tag, "hard sharing", log.get(hard.to_dict()) or scorer.score([hard])[0])
        if self.settings.random:
            random_log = PopulationLog(self.dir / "random.jsonl", writable=run.is_writer)
            from mtnas.search.evolution import RandomSearch

            n = len(log)
            with run.progress(f"study: independent random search, {n} candidates") as progress:
                # Its own stream (seeded from the run's seed and "study/random"): not the search's first draws.
                problem = method.problem(
                    run, random_log, random.Random(unit_seed(run.seed, "study/random")), progress
                )
                RandomSearch(num_candidates=n).run(problem)
            in_budget = method.within_budget(random_log)
            # Re-scored as the search's own best are, with as many fine-tunes (no local search: `finetuned`).
            if in_budget and method.finetune_top:
                in_budget = method.finetuned(run, in_budget)
            if in_budget:
                add(  # chosen by the search's own rule: the comparison is of the strategies, not the rules
                    "random",
                    "best random",
                    select(in_budget, method.select_rule, method.objectives, method.select_tolerance),
                )
        for i, record in enumerate(spread_by_cost(records, self.settings.archs)):
            add(f"spread-{i}", "spread", record)
        front = sorted(pareto_front(records, "params"), key=lambda r: -r["delta_m"])
        for i, record in enumerate(front[: self.settings.front]):
            add(f"front-{i}", "front", record)
        if method.finetune_top:  # the score the search selected by, for every arch: is it a better ranking?
            for i, c in enumerate(out.values()):
                c["finetuned_delta_m"] = method.finetuned_delta_m(run, c["arch"], i, len(out))
        return out

    def update_report(self, result: Mapping[str, Any]) -> None:
        """A run already evaluated gets the study in its results.json and report.md."""
        from mtnas.report.tables import results_markdown
        from mtnas.utils.io import read_json

        path = self.run.out / "results.json"
        if not path.exists() or "search" not in (results := read_json(path)):
            return
        results["search"]["study"] = result
        self.run.write_json(path, results)
        self.run.write_text(self.run.out / "report.md", results_markdown(results, self.run.task_objs))

    # -- retraining -----------------------------------------------------------------------------------
    def retrain(self, tag: str, arch_dict: Mapping[str, Any], k: int) -> dict[str, Any]:
        method, run = self.method, self.run
        arch = method.space.arch_from_dict(arch_dict)
        # The run's retrain unit, as a run with seed + k would train it: replicate 0 is the run's own retrain/.
        unit = Unit("multitask", self.dir / tag / f"seed{k}", tuple(run.tasks))
        self.set_aside_if_another_arch(tag, unit.dir, arch.to_dict())
        with run.reseeded(run.seed + k):
            if not (unit.dir / "fit.json").exists():
                rank, world = rank_and_world()
                by = f" (process {rank} of {world})" if world > 1 else ""
                run.announce(f"study: {tag}, seed {run.seed} → {unit.dir}{by}")
            fit = method.train_arch(run, arch, unit, self.settings.max_epochs)
        return {"fit": fit, "test": run.test(unit)}

    def set_aside_if_another_arch(self, tag: str, folder: Path, arch_dict: Mapping[str, Any]) -> None:
        """A replicate folder holding another arch (the study's settings, or the rule that picks a role's arch,
        changed since it ran) must not be taken for this arch's: it is renamed `<folder>-<its arch digest>`,
        and a folder this arch left there earlier comes back (else this arch trains afresh)."""
        recorded = folder / "arch.yaml"
        if not recorded.exists():
            return
        old = yaml.safe_load(recorded.read_text())
        if arch_key(old) == arch_key(arch_dict):
            return
        aside = folder.with_name(f"{folder.name}-{arch_digest(old)}")
        kept = folder.with_name(f"{folder.name}-{arch_digest(arch_dict)}")
        self.run.announce(
            f"study: {folder} trained another arch for `{tag}` than this study picks; kept as {aside}"
            + (f", and {kept} of this arch restored" if kept.exists() else ", retraining")
        )
        if aside.exists():  # that arch was set aside before: this folder is a rerun of the same training
            shutil.rmtree(folder)
        else:
            folder.rename(aside)
        if kept.exists():
            kept.rename(folder)

    def __call__(self) -> dict[str, Any]:
        run = self.run
        candidates = self.candidates()
        ref_test = {u.tasks[0]: run.test(u)["test"][u.tasks[0]] for u in run.baseline_units}
        dirs = {t: task.delta_m_directions for t, task in run.task_objs.items()}
        conv = run.cfg.delta_m.convention
        jobs = [(tag, k) for tag in candidates for k in range(self.settings.seeds)]
        with run.alone():  # under DDP each process retrains every world-th (arch, replicate) by itself
            done = spread_across_processes(
                lambda mine: [self.retrain(tag, candidates[tag]["arch"], k) for tag, k in mine], patient=True
            )(jobs)
        retrained = dict(zip(jobs, done, strict=True))
        for tag, c in candidates.items():
            runs = [retrained[tag, k] for k in range(self.settings.seeds)]
            c["retrained_val_delta_m"] = [r["fit"].get("val_delta_m") for r in runs]
            c["test_delta_m"] = [delta_m(r["test"]["test"], ref_test, dirs, conv) for r in runs]
            c["test"] = [r["test"]["test"] for r in runs]
            c["val"] = mean_std([v for v in c["retrained_val_delta_m"] if v is not None])
            c["test_summary"] = mean_std(c["test_delta_m"])
        tags = list(candidates)
        inherited = [candidates[t]["inherited_delta_m"] for t in tags]
        retrained_val = [candidates[t]["val"]["mean"] for t in tags]
        result: dict[str, Any] = {
            "settings": vars(self.settings),
            "baselines_test": ref_test,
            "archs": candidates,
            "inherited_vs_retrained_val": rank_correlations(inherited, retrained_val),
            "inherited_vs_test": rank_correlations(
                inherited, [candidates[t]["test_summary"]["mean"] for t in tags]
            ),
        }
        if all("finetuned_delta_m" in c for c in candidates.values()):
            finetuned = [candidates[t]["finetuned_delta_m"] for t in tags]
            result["finetuned_vs_retrained_val"] = rank_correlations(finetuned, retrained_val)
        result.update(paired_differences(candidates))
        run.write_json(self.dir / "study.json", result)
        if run.is_writer:
            run.write_text(self.dir / "study.md", study_markdown(result, image="study.png"))
            plot_study(result, self.dir / "study.png")
            self.update_report(result)
        run.announce("study: " + "; ".join(study_lines(result)) + f" → {self.dir / 'study.json'}")
        return result
