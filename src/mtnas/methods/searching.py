"""What every searching method shares: the search folder and its fronts, `arch.yaml`, the retrain of the
chosen arch, cost with measured latency, and the search part of the report, `results.json` and wandb.

A subclass sets `space` (with `largest`, `read_arch`, `arch_from_dict`), `objectives` and `select_rule`, and
defines `subnet_model(arch)` (the static model spec of an arch), `analytic_cost(run, arch)` and
`inherited_weights(run, arch)` (the state dict a retrain with `retrain.init=inherited` starts from).
"""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mtnas.errors import ConfigError, MtnasError
from mtnas.methods.base import Method
from mtnas.search.pareto import hypervolume, hypervolume_reference, non_dominated, pareto_front, select
from mtnas.search.population import PopulationLog, arch_digest, arch_key
from mtnas.search.problem import Problem, best_across_niches
from mtnas.tasks import image_level
from mtnas.utils.checks import one_of, optional_positive_int, positive_int

if TYPE_CHECKING:
    from mtnas.run import Run, Unit

RETRAIN_INITS = ("inherited", "scratch")
DERIVE_PICKS = ("argmax", "best")
COST_FRONTS = ("params", "flops", "latency_ms")  # search/pareto.json: Δm against each cost that was measured


def checked_objectives(value: Any) -> tuple[str, ...]:
    """`search.objectives`: the costs traded against Δm in the reported front."""
    from mtnas.search.budget import COST_KEYS

    items = list(value) if isinstance(value, list | tuple) else None
    if not items or any(o not in COST_KEYS for o in items) or len(set(items)) != len(items):
        raise ConfigError(
            "search.objectives",
            f"got {value!r}; expected a non-empty list of distinct costs from {list(COST_KEYS)} (the costs "
            "traded against Δm in the reported front), e.g. search.objectives=[params,flops].",
        )
    return tuple(items)


def checked_derive(derive: Mapping[str, Any]) -> dict[str, Any]:
    """`method.derive` of a method that derives archs from learnt logits and scores samples of them."""
    derive = dict(derive)
    positive_int("method.derive.samples", derive.get("samples", 0), minimum=0)
    one_of("method.derive.pick", derive.get("pick", "argmax"), DERIVE_PICKS)
    optional_positive_int("method.derive.val_batches", derive.get("val_batches"))
    positive_int("method.derive.bn_batches", derive.get("bn_batches", 0), minimum=0)
    return derive


def checked_retrain(retrain: Mapping[str, Any]) -> dict[str, Any]:
    retrain = dict(retrain)
    one_of("method.retrain.init", retrain.get("init"), RETRAIN_INITS)
    optional_positive_int("method.retrain.max_epochs", retrain.get("max_epochs"))
    return retrain


def input_files(arch: str | None, supernet_ckpt: str | None) -> tuple[Path | None, Path | None]:
    """`arch=` and `supernet_ckpt=` as paths, each an existing file when given."""
    for key, value in (("arch", arch), ("supernet_ckpt", supernet_ckpt)):
        if value is not None and not Path(str(value)).expanduser().is_file():
            raise ConfigError(key, f"file {value} does not exist.")
    return tuple(Path(str(v)).expanduser() if v is not None else None for v in (arch, supernet_ckpt))  # type: ignore[return-value]


def refuse_clipping_and_accumulation(run: Run, method: str, optimizers: str) -> None:
    """A method that steps two optimizers itself (manual optimisation) cannot use Lightning's gradient
    clipping or accumulation: refuse them before any work."""
    trainer = run.cfg.trainer
    if trainer.get("gradient_clip_val") or int(trainer.get("accumulate_grad_batches") or 1) != 1:
        key = (
            "trainer.gradient_clip_val"
            if trainer.get("gradient_clip_val")
            else "trainer.accumulate_grad_batches"
        )
        raise ConfigError(
            key,
            f"method={method} steps its two optimizers ({optimizers}) itself, which Lightning's gradient "
            "clipping and accumulation do not support: leave them unset.",
        )


LOCAL_SEARCH = "local search"  # how the population log marks the archs `finetune_local` scored


class SearchMethod(Method):
    final_folder = "retrain"
    space: Any
    objectives: tuple[str, ...] = ("params",)
    select_rule: str = "best"
    select_tolerance: float = 0.5  # select_rule "frugal": points of val Δm
    # Re-scoring before selection (`search.finetune_*`): `top` candidates fine-tuned briefly (`finetuned`).
    finetune_top: int = 0
    finetune_epochs: int = 2
    finetune_lr_scale: float = 0.1
    finetune_local: int = 0  # ... then this many fine-tunes by local search (`finetuned` with a problem)
    finetune_screen: int = 4  # ... each of the best of this many mutants by inherited val Δm
    search_name: str = "search"
    retrain: dict[str, Any]
    derive: dict[str, Any]  # methods that derive archs from learnt logits (`choose_derived`)
    arch_file: Path | None = None  # `arch=`: an arch file to retrain
    supernet_ckpt: Path | None = None  # `supernet_ckpt=`: RUN/<stage>/last.ckpt of a trained supernet

    def __init__(self, name: str):
        super().__init__(name)
        self._searched = None  # held in memory: other DDP ranks must not read arch.yaml early
        self._latency = None
        self._evaluator = None  # the candidate scorer, built once per process

    # -- run folder ---------------------------------------------------------------------------------
    @staticmethod
    def search_dir(run: Run) -> Path:
        return run.out / "search"

    @staticmethod
    def arch_path(run: Run) -> Path:
        return run.out / "arch.yaml"

    def linked_runs(self) -> list[Path]:
        """The run folders `supernet_ckpt=` (RUN/<stage>/last.ckpt) and `arch=` (RUN/arch.yaml, or a retrained
        model's RUN/retrain/arch.yaml) come from."""
        runs = []
        if self.supernet_ckpt is not None:
            runs.append(self.supernet_ckpt.resolve().parent.parent)
        if self.arch_file is not None:
            arch_dir = self.arch_file.resolve().parent
            runs.append(arch_dir.parent if arch_dir.name == "retrain" else arch_dir)
        return runs

    def describe_arch(self, arch: Mapping[str, Any]) -> str:
        return type(self.space.largest()).from_dict(arch).describe()

    # -- models and cost ----------------------------------------------------------------------------
    @abstractmethod
    def subnet_model(self, arch) -> dict[str, Any]:
        """The model spec (`_target_` mapping) of `arch` as a static model."""

    @abstractmethod
    def analytic_cost(self, run: Run, arch) -> dict[str, float]:
        """Params and FLOPs of `arch` without building it."""

    @abstractmethod
    def inherited_weights(self, run: Run, arch) -> dict[str, Any]:
        """The state dict of `arch`'s static model with the search's trained weights."""

    # -- scoring candidates ---------------------------------------------------------------------------
    @abstractmethod
    def make_evaluator(self, run: Run):
        """The candidate scorer: archs → val Δm records with the search's trained weights (`scorer`)."""

    def scorer(self, run: Run, net, val_batches: int | None, prepare=None):
        """Score archs of `net` (`net(images, arch)`) by val Δm on the first `val_batches` val batches
        (all when None), spread across DDP processes; `prepare(arch)` runs before each (e.g. BN statistics)."""
        from mtnas.search.evaluator import SubnetEvaluator
        from mtnas.utils.distributed import spread_across_processes

        baselines = run.load_baselines(required=True)
        run.dm.setup("validate")
        batches = [b for i, b in enumerate(run.dm.val_dataloader()) if val_batches is None or i < val_batches]
        return spread_across_processes(
            SubnetEvaluator(
                net, run.task_objs, batches, baselines["val"], run.cfg.delta_m.convention, prepare
            )
        )

    def problem(self, run: Run, log: PopulationLog, rng, progress=None) -> Problem:
        """A search problem over this run's trained weights: candidates scored (one scorer per process),
        costed, kept in `log`, proposed from `rng`."""
        if self._evaluator is None:
            self._evaluator = self.make_evaluator(run)
        return Problem(
            self.space,
            self._evaluator,
            lambda a: self.cost(run, a),
            self.budget,
            log,
            rng,
            progress,
            cost_keys=self.cost_keys(run),
            anchors=self.search_anchors(),
            niche=self.sharing_level,
        )

    def within_budget(self, log: PopulationLog) -> list[dict[str, Any]]:
        """The records of `log` that meet the budget."""
        return [r for r in log.records.values() if self.budget.satisfied(r["cost"])]

    def search_anchors(self) -> list:
        """Archs a population-based search starts from (`Problem.anchors`); none by default."""
        return []

    def measures_latency(self, run: Run) -> bool:
        return (
            self.budget.limits_latency
            or bool(run.cfg.latency.get("in_search", False))
            or ("latency_ms" in self.objectives)
        )

    def cost_keys(self, run: Run) -> tuple[str, ...]:
        return ("params", "flops", "latency_ms") if self.measures_latency(run) else ("params", "flops")

    def cost(self, run: Run, arch) -> dict[str, float]:
        """Analytic params and FLOPs; plus measured `latency_ms` when the budget or the objectives need it
        (or `latency.in_search=true`), timed once per arch and device and cached in the cache folder."""
        cost = self.analytic_cost(run, arch)
        if self.measures_latency(run):
            cost["latency_ms"] = self.latency(run, arch)
        return cost

    def latency_key(self, run: Run, arch) -> str:
        spec = {k: v for k, v in self.subnet_model(arch).items() if k != "arch"}
        out_channels = sorted((t, task.out_channels) for t, task in run.task_objs.items())
        pooled = sorted(image_level(run.task_objs))
        return (
            f"{yaml.safe_dump(spec, sort_keys=True)}|{out_channels}|pooled{pooled}|{arch_key(arch.to_dict())}"
        )

    def latency(self, run: Run, arch) -> float:
        import torch

        from mtnas.lit.multitask import build_model
        from mtnas.search.cost import measure_latency
        from mtnas.search.latency import LatencyTable

        lcfg = run.cfg.latency
        if self._latency is None:
            self._latency = LatencyTable(
                Path(run.cfg.paths.cache_dir) / "latency.json",
                run.device,
                int(lcfg.batch_size),
                run.image_size,
            )

        def measure() -> float:
            # Latency does not depend on the weights: a fresh static model of this arch is timed, built with
            # the random state set aside, so that timing (or not) leaves later stages' initialisation as it is.
            with torch.random.fork_rng(devices=[]):
                model = build_model(self.subnet_model(arch), run.task_objs, run.image_size)
            return measure_latency(
                model, run.image_size, int(lcfg.batch_size), run.device, int(lcfg.warmup), int(lcfg.repeats)
            )

        return self._latency(self.latency_key(run, arch), measure)

    # -- the chosen arch ------------------------------------------------------------------------------
    def fronts(self, run: Run, records: list[dict[str, Any]]) -> dict[str, Any]:
        """`search/pareto.json`: the Δm-vs-cost front per measured cost, the front over Δm and all
        `objectives` together, and that front's hypervolume with its reference point."""
        objectives = list(self.objectives)
        largest = self.cost(run, self.space.largest(task_specific=True))
        reference = hypervolume_reference(records, objectives, largest)
        out: dict[str, Any] = {
            k: pareto_front(records, k) for k in COST_FRONTS if all(k in r["cost"] for r in records)
        }
        out["objectives"] = objectives
        out["front"] = non_dominated(records, objectives)
        out["hypervolume"] = hypervolume(records, objectives, reference)
        out["hypervolume_reference"] = reference
        return out

    def write_choice(
        self, run: Run, log: PopulationLog, records: list[dict[str, Any]], best, how: str
    ) -> None:
        """The search's artifacts: `search/pareto.json`, `arch.yaml` (with how it was chosen) and `pareto.png`.
        Costing runs on every process (a latency measurement may broadcast); only rank 0 writes."""
        self._searched = type(self.space.largest()).from_dict(best["arch"])
        fronts = self.fronts(run, records)
        if not run.is_writer:
            return
        run.write_json(self.search_dir(run) / "pareto.json", fronts)
        header = (
            f"# Chosen by {how}: val Δm {best['delta_m']:+.2f} %, "
            f"{best['cost']['params'] / 1e6:.3f} M params, {best['cost']['flops'] / 1e9:.4f} GFLOPs.\n"
            "# Edit freely and retrain with: stage=retrain arch=<this file>\n"
        )
        run.write_text(
            self.arch_path(run), header + yaml.safe_dump(self._searched.to_dict(), sort_keys=False)
        )
        from mtnas.report.pareto import plot_pareto

        plot_pareto(log, run.out / "pareto.png", experiment=run.cfg.experiment_name)

    def already_searched(self, run: Run, stage: str) -> bool:
        """Whether an earlier run of this folder finished the search (`search/pareto.json` and `arch.yaml`);
        if so, its chosen arch is loaded and `stage` is skipped."""
        done = self.search_dir(run) / "pareto.json"
        if not (done.exists() and self.arch_path(run).exists()):
            return False
        run.announce(f"{stage}: already done ({done}), skipping")
        self._searched = self.space.read_arch(self.arch_path(run))
        return True

    def choose_derived(
        self, run: Run, stage: str, archs: list, names: tuple[str, str], knob: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
        """Score `archs` (the arch the method's learnt logits give, then samples drawn from them) on val with
        inherited weights into `search/population.jsonl`, and choose by `derive.pick`: the first arch when it is
        within the budget (`argmax`), else the best val Δm within the budget. `names`: how the first arch and
        the best sample are described; `knob`: the method's weight that pulls the logits into the budget.
        Returns the scored records (in the order of `archs`), the chosen one and how it was chosen."""
        log = PopulationLog(self.search_dir(run) / "population.jsonl", writable=run.is_writer)
        with run.progress(f"{stage}: scoring {names[0]} and {len(archs) - 1} samples") as progress:
            scored = self.problem(run, log, random.Random(run.seed), progress).score(archs)
        records = [r for r in {id(r): r for r in scored}.values() if self.budget.satisfied(r["cost"])]
        if not records:
            raise MtnasError(
                f"none of the {len(archs)} derived archs meets {self.budget.describe()}: raise {knob}, draw "
                "more archs (method.derive.samples), or widen `budget`."
            )
        argmax = self.derive.get("pick", "argmax") == "argmax" and self.budget.satisfied(scored[0]["cost"])
        best = scored[0] if argmax else select(records, "best", self.objectives)
        how = names[0] if best is scored[0] else names[1]
        self.write_choice(run, log, records, best, f"{self.name} ({how})")
        return scored, best, how

    def searched_arch(self, run: Run):
        """`arch=` when given, else the arch the search just chose, else the run's arch.yaml."""
        if self.arch_file is not None:
            return self.space.read_arch(self.arch_file)
        return self._searched or self.space.read_arch(self.arch_path(run))

    def retrain_arch(self, run: Run) -> None:
        self.train_arch(run, self.searched_arch(run), run.multitask_unit(self.final_folder))

    def train_arch(
        self,
        run: Run,
        arch,
        unit: Unit,
        max_epochs: int | None = None,
        init: str | None = None,
        lr_scale: float = 1.0,
    ) -> dict[str, Any]:
        """Train `arch` as a static model into `unit.dir` with the retrain recipe (`init`, default `retrain.init`;
        `max_epochs`, default `retrain.max_epochs`; `lr_scale` × `optim.lr`): the chosen arch's retrain, each
        of a study's retrains, and the short fine-tunes that re-score the search's best (`finetuned`)."""
        if not (unit.dir / "fit.json").exists():
            # A record beside the weights of exactly what was trained (arch= files may change later).
            run.write_text(unit.dir / "arch.yaml", yaml.safe_dump(arch.to_dict(), sort_keys=False))
        module = run.lit_module(unit, self.subnet_model(arch), lr_scale)
        if (init or self.retrain["init"]) == "inherited" and not (unit.dir / "last.ckpt").exists():
            module.model.load_state_dict(self.inherited_weights(run, arch))
        return run.fit(unit, module, max_epochs or self.retrain.get("max_epochs"))

    def sharing_level(self, arch: Mapping[str, Any]) -> int:
        """How far `arch` departs from hard sharing (the one-shot method: its number of task-specific layers);
        `finetuned` takes its candidates across these levels. One level by default."""
        return 0

    def finetuned(
        self, run: Run, records: list[dict[str, Any]], problem: Problem | None = None
    ) -> list[dict[str, Any]]:
        """`finetune_top` of `records`, each re-scored by `finetuned_delta_m` (`inherited_delta_m` keeps the
        first score). Inherited weights favour the archs the supernet trained most: its sandwich trains hard
        sharing (largest and smallest) at every step, task-specific copies only when sampled, so inherited
        scores are biased by sharing level. The candidates are therefore the best by inherited val Δm *within*
        each sharing level, taken in turn (best level first), and the short fine-tune compares them across levels.

        With `problem` (the search's own), `finetune_local` more candidates follow by local search around the best
        fine-tuned arch (`locally_searched`); without it (a study's random search) as many more are taken by the
        same rule from `records`, so both spend as many fine-tunes."""
        extra = 0 if problem is not None else self.finetune_local
        # Not the local search's own mutants: a search resumed after a kill takes the candidates it took before.
        pool = [r for r in records if r.get("found_by") != LOCAL_SEARCH]
        top = best_across_niches(pool, self.finetune_top + extra, self.sharing_level)
        out = [self.rescored(run, r, i, len(top)) for i, r in enumerate(top)]
        if problem is not None:
            for step in range(self.finetune_local):
                found = self.locally_searched(run, problem, out)
                if found is None:
                    run.announce(
                        f"search: local search stopped after {step} steps: no unseen mutant within the budget"
                    )
                    break
                out.append(found)
        return out

    def rescored(self, run: Run, record: Mapping[str, Any], i: int, n: int) -> dict[str, Any]:
        """`record` with its fine-tuned val Δm as `delta_m` and its inherited one as `inherited_delta_m`."""
        return {
            **record,
            "inherited_delta_m": record["delta_m"],
            "delta_m": self.finetuned_delta_m(run, record["arch"], i, n),
        }

    def locally_searched(
        self, run: Run, problem: Problem, finetuned: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        """One step of local search on the fine-tuned score: `finetune_screen` mutants of the best fine-tuned arch
        so far, not fine-tuned yet and within the budget, are scored with inherited weights (into the population
        log) and the best of them is fine-tuned, its candidate marked `found_by`. None when no such mutant turns
        up. Fine-tuning ranks the retrained archs far better than inherited weights do
        (experiments/autotaskformer/README.md), so the search climbs on that score; inherited weights only
        pre-screen the mutants."""
        best = max(finetuned, key=lambda r: r["delta_m"])
        parent = self.space.arch_from_dict(best["arch"])
        seen = {arch_key(r["arch"]) for r in finetuned}
        mutants: dict[Any, Any] = {}
        for _ in range(self.finetune_screen * 25):  # mutants may repeat the parent or each other
            if len(mutants) == self.finetune_screen:
                break
            mutant = problem.within_budget(lambda: self.space.mutate(parent, problem.rng))
            if mutant is None:
                break
            key = arch_key(mutant.to_dict())
            if key not in seen:
                mutants.setdefault(key, mutant)
        if not mutants:
            return None
        pick = max(problem.score(list(mutants.values()), LOCAL_SEARCH), key=lambda r: r["delta_m"])
        n = self.finetune_top + self.finetune_local
        return {**self.rescored(run, pick, len(finetuned), n), "found_by": LOCAL_SEARCH}

    def finetuned_delta_m(self, run: Run, arch_dict: Mapping[str, Any], i: int = 0, n: int = 1) -> float:
        """Val Δm of an arch after `finetune_epochs` epochs of training from its inherited weights at
        `finetune_lr_scale` × `optim.lr`. Each fine-tune is a unit of its own, `search/finetune/<arch digest>/`,
        shared by every caller (the search, a study's random search and archs) and resumed after a kill."""
        from mtnas.run import Unit

        digest = arch_digest(arch_dict)
        # One unit name for all: every candidate trains from the same seed, on the same data order.
        unit = Unit("finetune", self.search_dir(run) / "finetune" / digest, tuple(run.tasks))
        if not (unit.dir / "fit.json").exists():
            run.announce(f"search: fine-tuning candidate {i + 1} of {n} → {unit.dir}")
        arch = self.space.arch_from_dict(arch_dict)
        fit = self.train_arch(run, arch, unit, self.finetune_epochs, "inherited", self.finetune_lr_scale)
        for weights in ("best.ckpt", "last.ckpt"):  # its score is all that is needed (fit.json)
            (unit.dir / weights).unlink(missing_ok=True)
        return float(fit["val_delta_m"])

    # -- reporting ------------------------------------------------------------------------------------
    def report(self, run: Run, results: Mapping[str, Any]) -> None:
        """`pareto.png` again, with the retrained arch's test Δm in its title."""
        from mtnas.report.pareto import plot_pareto

        plot_pareto(PopulationLog(self.search_dir(run) / "population.jsonl"), run.out / "pareto.png", results)

    def arch_columns(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """Method-specific columns of the wandb population table."""
        return {}

    def wandb_tables(self, run: Run, wandb: Any) -> dict[str, Any]:
        """The whole population as a wandb table (one row per evaluated subnet) and the Pareto plot."""
        recs = list(PopulationLog(self.search_dir(run) / "population.jsonl").records.values())
        out: dict[str, Any] = {}
        if recs:
            extra = list(self.arch_columns(recs[0]["arch"]))
            cols = ["params", "flops", "delta_m", *extra, "arch"]
            rows = [
                [
                    r["cost"]["params"],
                    r["cost"]["flops"],
                    r["delta_m"],
                    *self.arch_columns(r["arch"]).values(),
                    yaml.safe_dump(r["arch"]),
                ]
                for r in recs
            ]
            out["population"] = wandb.Table(columns=cols, data=rows)
        if (run.out / "pareto.png").exists():
            out["pareto"] = wandb.Image(str(run.out / "pareto.png"))
        return out

    def summary(self, run: Run) -> dict[str, Any]:
        from mtnas.utils.io import read_json

        pareto = self.search_dir(run) / "pareto.json"
        fronts = read_json(pareto) if pareto.exists() else {}
        # What was evaluated: the retrained model's record first, else what a retrain would train.
        candidates = [run.out / self.final_folder / "arch.yaml", self.arch_file or self.arch_path(run)]
        arch_file = next((f for f in candidates if f.exists()), None)
        log = PopulationLog(self.search_dir(run) / "population.jsonl")
        arch = self.space.read_arch(arch_file) if arch_file else None
        searched = log.get(arch.to_dict()) if arch else None  # None for a hand-written arch never evaluated
        front = [{**r, "line": self.describe_arch(r["arch"])} for r in fronts.get("params", [])]
        return {
            "arch": arch.to_dict() if arch else None,
            "arch_line": arch.describe() if arch else None,
            "arch_file": str(
                arch_file.relative_to(run.out) if arch_file.is_relative_to(run.out) else arch_file
            )
            if arch_file
            else None,
            "searched": {"delta_m": searched["delta_m"], "cost": searched["cost"]} if searched else None,
            "evaluated": len(log),
            "strategy": self.search_name,
            "select": self.select_rule,
            "objectives": fronts.get("objectives", list(self.objectives)),
            "hypervolume": fronts.get("hypervolume"),
            "pareto_params": front,
            "budget": {k: v for k, v in vars(self.budget).items() if v is not None},
            **({"study": read_json(study)} if (study := run.out / "study" / "study.json").exists() else {}),
        }
