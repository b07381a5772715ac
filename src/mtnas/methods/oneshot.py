"""AutoTaskFormer-style one-shot NAS: ViT supernet (sandwich rule) → strategy search → retrain.

The supernet trains every subnet of a ViT space at once (elastic width, depth, heads, MLP ratio, and per
layer which tasks run a task-specific copy of the block); the search strategy (`search=evolution | random |
nsga2`) scores candidates by val Δm with inherited weights, under the budget; the chosen arch is retrained as
a plain static model. Run folder: `supernet/`, `search/`, `arch.yaml`, `retrain/`.
"""

from __future__ import annotations

import random
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtnas.errors import ConfigError, MtnasError
from mtnas.methods.searching import LOCAL_SEARCH, RETRAIN_INITS, SearchMethod
from mtnas.methods.study import Study, StudySettings
from mtnas.run import Unit
from mtnas.search.budget import Budget, sample_within
from mtnas.search.pareto import select
from mtnas.search.population import PopulationLog, arch_key
from mtnas.search.problem import Strategy
from mtnas.space import ViTArch, build_space
from mtnas.supernet.vit import LARGEST_SHARING, ViTCost, sandwich_archs, subnet_spec
from mtnas.utils.checks import (
    non_negative_number,
    one_of,
    open_fraction,
    optional_positive_int,
    positive_int,
    positive_number,
)
from mtnas.utils.specs import as_dict, instantiate_spec

if TYPE_CHECKING:
    from mtnas.run import Run


class OneShotMethod(SearchMethod):
    stages = ("supernet", "search", "retrain")
    optional_stages = ("study",)

    def __init__(
        self,
        name: str,
        tasks: list[str],
        space: Mapping[str, Any] | None,
        search: Mapping[str, Any],
        budget: Mapping[str, Any] | None,
        supernet: Mapping[str, Any],
        retrain: Mapping[str, Any],
        supernet_ckpt: str | None = None,
        arch: str | None = None,
        study: Mapping[str, Any] | None = None,
    ):
        super().__init__(name)
        self.study_settings = StudySettings.from_config(study)
        self.tasks = list(tasks)
        if space is None:
            raise ConfigError(
                "space",
                f"method={name} searches a ViT space: add one, e.g. `space=vit_demo` or `space=autoformer_s`.",
            )
        self.space_spec = as_dict(space)
        self.space = build_space(self.space_spec, self.tasks)
        self.budget = Budget.from_config(budget)
        self.strategy: Strategy = instantiate_spec(search, "search", lenient=True)
        self.objectives, self.select_rule = self.strategy.objectives, self.strategy.select
        self.select_tolerance = self.strategy.tolerance
        self.finetune_top = self.strategy.finetune_top
        self.finetune_epochs = self.strategy.finetune_epochs
        self.finetune_lr_scale = self.strategy.finetune_lr_scale
        self.finetune_local = self.strategy.finetune_local
        self.finetune_screen = self.strategy.finetune_screen
        self.search_name = self.strategy.name
        self.supernet = dict(supernet)
        self.retrain = dict(retrain)
        one_of("retrain.init", self.retrain.get("init"), RETRAIN_INITS)
        self.patch_size = positive_int("supernet.patch_size", self.supernet.get("patch_size"))
        optional_positive_int("supernet.max_epochs", self.supernet.get("max_epochs"))
        positive_int("supernet.num_random", self.supernet.get("num_random", 2), minimum=0)
        non_negative_number("supernet.distill", self.supernet.get("distill", 0.0))
        positive_number("supernet.lr_scale", self.supernet.get("lr_scale", 1.0))
        one_of("supernet.largest_sharing", self.supernet.get("largest_sharing", "shared"), LARGEST_SHARING)
        # A fraction below 1, so that task-specific blocks train after the warm-up of shared ones.
        open_fraction("supernet.shared_warmup", self.supernet.get("shared_warmup", 0.0), allow_zero=True)
        for key in ("compile", "task_specific_largest"):
            if not isinstance(self.supernet.get(key, False), bool):
                raise ConfigError(f"supernet.{key}", f"got {self.supernet[key]!r}; expected true or false.")
        optional_positive_int("retrain.max_epochs", self.retrain.get("max_epochs"))
        timm_init = self.supernet.get("timm_init")
        if timm_init is not None and (
            not isinstance(timm_init, Mapping)
            or not timm_init.get("model")
            or not timm_init.get("checkpoint")
        ):
            example = "supernet.timm_init='{model: vit_small_patch16_224, checkpoint: /path/to/weights.pth}'"
            raise ConfigError(
                "supernet.timm_init",
                f"got {timm_init!r}; expected a mapping with `model` and `checkpoint`, e.g. {example} "
                "(on the command line inside quotes: unquoted, the shell splits {a,b} into two arguments).",
            )
        for key, value in (("arch", arch), ("supernet_ckpt", supernet_ckpt)):
            if value is not None and not Path(str(value)).expanduser().is_file():
                raise ConfigError(key, f"file {value} does not exist.")
        self.arch_file = Path(str(arch)).expanduser() if arch is not None else None
        if self.arch_file is not None:
            self.space.read_arch(self.arch_file)
        self.supernet_ckpt = Path(str(supernet_ckpt)).expanduser() if supernet_ckpt is not None else None
        if self.supernet_ckpt is not None and not zipfile.is_zipfile(self.supernet_ckpt):
            # torch.save writes a zip archive: anything else (a YAML, a log) is refused before any work.
            raise ConfigError(
                "supernet_ckpt",
                f"{supernet_ckpt} is not a checkpoint; expected a supernet checkpoint (a run's supernet/last.ckpt).",
            )

    # -- run folder ---------------------------------------------------------------------------------
    @staticmethod
    def supernet_dir(run: Run) -> Path:
        return run.out / "supernet"

    def trained_dirs(self, run: Run) -> list[Path]:
        return [run.out / self.final_folder, self.supernet_dir(run)]

    # -- cost ---------------------------------------------------------------------------------------
    def analytic_cost(self, run: Run, arch: ViTArch) -> dict[str, float]:
        return ViTCost.of(self.space, run.task_objs, run.image_size, self.patch_size)(arch)

    def latency_key(self, run: Run, arch: ViTArch) -> str:
        out_channels = sorted((t, task.out_channels) for t, task in run.task_objs.items())
        pooled = sorted(t for t, task in run.task_objs.items() if not task.dense)
        return f"p{self.patch_size}|{out_channels}|pooled{pooled}|{arch_key(arch.to_dict())}"

    # -- checks before any work ---------------------------------------------------------------------
    def check(self, run: Run, plan: tuple[str, ...]) -> None:
        """What would otherwise fail only after hours of training: a budget no arch of the space meets,
        timm weights that are not there."""
        self.check_budget(run, probe="search" in plan)
        spec = self.supernet.get("timm_init")
        if spec and "supernet" in plan and not (self.supernet_dir(run) / "last.ckpt").exists():
            weights = Path(str(spec["checkpoint"])).expanduser()
            if not weights.is_file():
                raise ConfigError("supernet.timm_init.checkpoint", f"weights file {weights} does not exist.")

    def check_budget(self, run: Run, probe: bool = True) -> None:
        h, w = run.image_size
        if h % self.patch_size or w % self.patch_size:
            raise ConfigError("supernet.patch_size", f"{self.patch_size} must divide the image size {h}×{w}.")
        self.budget.check_feasible(
            self.cost(run, self.space.smallest()), self.cost(run, self.space.largest(task_specific=True))
        )
        searched = (self.search_dir(run) / "population.jsonl").exists() or self.arch_path(run).exists()
        if probe and not searched and self.budget.is_limited and not self.budget.limits_latency:
            # Each bound alone may be inside the space while the window they make holds no arch: the search
            # would find nothing. Analytic cost is cheap, so look (measured latency is too slow to look).
            rng, tries = random.Random(run.seed), 2000
            found = sample_within(
                lambda: self.space.sample(rng), lambda a: self.analytic_cost(run, a), self.budget, tries
            )
            if found is None:
                raise ConfigError(
                    "budget",
                    f"no arch of the space meets {self.budget.describe()} ({tries} random archs tried): "
                    "widen the budget or the space.",
                )

    # -- models -------------------------------------------------------------------------------------
    def subnet_model(self, arch: ViTArch) -> dict[str, Any]:
        return subnet_spec(arch, self.patch_size, self.space.head_dim)

    def inherited_weights(self, run: Run, arch: ViTArch) -> dict[str, Any]:
        return self.load_supernet(run).net.extract(arch).state_dict()

    def baseline_model(self, run: Run) -> dict[str, Any]:
        """Single-task baselines are the space's largest arch, trained alone (as in AutoTaskFormer)."""
        return self.subnet_model(self.space.largest())

    def supernet_module(self, run: Run):
        from mtnas.lit.supernet import SupernetLitModule

        return SupernetLitModule(
            tasks=self.tasks,
            available_tasks=run.available,
            space=self.space_spec,
            supernet=self.supernet,
            optim=run.optim(float(self.supernet.get("lr_scale", 1.0))),  # the supernet's own learning rate
            loss=run.section("loss"),
            image_size=run.image_size,
            seed=run.seed,
            baselines_val=run.baselines_val(),
            delta_m_convention=run.cfg.delta_m.convention,
        )

    def load_supernet(self, run: Run):
        from mtnas.lit.checkpoint import load_checkpoint

        if self.supernet_ckpt is not None:
            module = load_checkpoint(self.supernet_ckpt, ("supernet",), "supernet_ckpt", self.tasks)
            run.record_source("supernet", self.supernet_ckpt.resolve())
            return module
        own = self.supernet_dir(run) / "last.ckpt"
        # This folder's supernet, else the one it (or the run arch= comes from) searched with supernet_ckpt=.
        for run_dir in [run.out, *run.linked_runs()]:
            path = self._supernet_of(run, run_dir)
            if path is not None:
                break
        else:
            raise MtnasError(
                f"supernet checkpoint {own} does not exist: train it first (stage=supernet or stage=all), "
                "pass supernet_ckpt=/path/to/supernet/last.ckpt, or retrain from scratch with "
                "retrain.init=scratch."
            )
        if path != own:
            run.announce(f"supernet: using {path} (from another run folder; recorded in sources.json)")
            run.record_source("supernet", path)
        return load_checkpoint(path, ("supernet",), tasks=self.tasks)

    @staticmethod
    def _supernet_of(run: Run, run_dir: Path) -> Path | None:
        """A run folder's supernet: its own when trained to the end, else the one it recorded reusing,
        else its own partly trained one."""
        own = run_dir / "supernet" / "last.ckpt"
        recorded = run.sources(run_dir).get("supernet")
        if own.is_file() and (run_dir / "supernet" / "fit.json").exists():
            return own
        if recorded and Path(recorded).is_file():
            return Path(recorded)
        return own if own.is_file() else None

    # -- stages -------------------------------------------------------------------------------------
    def run_stage(self, stage: str, run: Run) -> None:
        stages = {"supernet": self.train_supernet, "search": self.search, "retrain": self.retrain_arch}
        stages["study"] = lambda run: Study(self, run, self.study_settings)()
        stages[stage](run)

    def search_anchors(self) -> list[ViTArch]:
        return sandwich_archs(self.space, self.supernet.get("task_specific_largest", False))

    def hard_sharing_archs(self, run: Run, searched: ViTArch, band: float = 0.0) -> list[ViTArch]:
        """The hand-made archs at the searched arch's cost: of the space's uniform hard-sharing archs
        (`ViTSpace.uniform_archs`), within the budget when one is, the one closest in params to `searched` (the
        larger on a tie), then every other within `band` × its params, nearest first. Uniform, as a person would
        build it: an arch with mixed per-layer choices and narrow heads can match the params while being
        needlessly weak, which flatters the search; and several, because a person would try the few widths and
        depths at that cost, and one of them can be much better (narrow heads at 1 % more params than wide ones)."""
        costs = {arch: self.analytic_cost(run, arch) for arch in self.space.uniform_archs()}
        within = [a for a, cost in costs.items() if self.budget.satisfied(cost)] or list(costs)
        target = self.analytic_cost(run, searched)["params"]
        gap = {a: abs(costs[a]["params"] - target) for a in within}
        ordered = sorted(within, key=lambda a: (gap[a], -costs[a]["params"]))
        return ordered[:1] + [a for a in ordered[1:] if gap[a] <= band * target]

    def train_supernet(self, run: Run) -> None:
        unit = Unit("supernet", self.supernet_dir(run), tuple(self.tasks))
        reused = self.supernet_ckpt or run.sources().get("supernet")
        if reused and not (unit.dir / "last.ckpt").exists():
            # This folder searches a supernet trained elsewhere (supernet_ckpt=, or recorded in sources.json when
            # an earlier stage here was given one): training another would leave the search and the retrain on
            # different supernets.
            run.announce(f"supernet: using {reused} (trained in another run folder), not training one here")
            if self.supernet_ckpt:
                run.record_source("supernet", self.supernet_ckpt.resolve())
            return
        run.seed_unit(unit)
        module = self.supernet_module(run)
        if self.supernet.get("timm_init") and not (unit.dir / "last.ckpt").exists():
            self.init_from_timm(run, module)
        run.fit(unit, module, self.supernet.get("max_epochs"))

    def init_from_timm(self, run: Run, module) -> None:
        """Start the supernet (largest shared arch, and every task copy) from local timm ViT weights.
        timm resamples the position embedding when the checkpoint was trained at another resolution."""
        import timm

        spec = self.supernet["timm_init"]
        path = Path(str(spec["checkpoint"])).expanduser()
        if not path.is_file():
            raise ConfigError("supernet.timm_init.checkpoint", f"weights file {path} does not exist.")
        s = self.space
        try:
            vit = timm.create_model(
                spec["model"],
                pretrained=True,
                pretrained_cfg_overlay={"file": str(path)},
                num_classes=0,
                img_size=run.image_size,
                patch_size=self.patch_size,
                embed_dim=max(s.embed_dims),
                depth=max(s.depths),
                num_heads=max(s.num_heads),
                mlp_ratio=max(s.mlp_ratios),
            )
            module.net.load_timm_vit(vit)
        except (RuntimeError, ValueError, KeyError) as e:
            raise ConfigError(
                "supernet.timm_init",
                f"{path} does not fit the space's largest arch as a {spec['model']}: {str(e).splitlines()[0]}",
            ) from None

    def make_evaluator(self, run: Run):
        """Val Δm with inherited supernet weights, on `search.val_batches` batches."""
        return self.scorer(run, self.load_supernet(run).net.to(run.device).eval(), self.strategy.val_batches)

    def search(self, run: Run) -> None:
        if self.already_searched(run, "search"):
            return
        started = time.perf_counter()
        log = PopulationLog(self.search_dir(run) / "population.jsonl", writable=run.is_writer)
        already = len(log)
        name = self.strategy.name
        with run.progress(f"search ({name}), {already} candidates already in the population log") as progress:
            problem = self.problem(run, log, random.Random(run.seed), progress)
            self.strategy.run(problem)
        records = self.within_budget(log)
        if not records:
            raise MtnasError("the search found no arch within the budget; widen `budget` or the space.")
        candidates = records
        if self.finetune_top:
            candidates = self.finetuned(run, records, problem)
            records = self.within_budget(log)  # with the local search's mutants
            if run.is_writer:
                run.write_json(self.search_dir(run) / "finetuned.json", candidates)
        best = select(candidates, self.select_rule, self.objectives, self.select_tolerance)
        rule = "" if self.select_rule == "best" else f" ({self.select_rule} of the front)"
        if self.finetune_top:
            found = sum(c.get("found_by") == LOCAL_SEARCH for c in candidates)  # fewer if it stopped early
            local = f", {found} of them by local search" if found else ""
            rule += (
                f", among {len(candidates)} candidates re-scored after a {self.finetune_epochs}-epoch fine-tune"
                + local
            )
        self.write_choice(run, log, records, best, f"{name} search{rule}")
        arch = self._searched
        run.announce(
            f"search: {len(log)} subnets evaluated ({len(log) - already} new) in "
            f"{time.perf_counter() - started:.0f} s, "
            f"{len(records)} within the budget; chosen {arch.describe()} (val Δm {best['delta_m']:+.2f} %) "
            f"→ {self.arch_path(run)}"
        )

    def sharing_level(self, arch: Mapping[str, Any]) -> int:
        return sum(bool(layer["task_specific"]) for layer in arch["layers"])

    def arch_columns(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "embed_dim": arch["embed_dim"],
            "depth": arch["depth"],
            "task_specific_layers": self.sharing_level(arch),
        }
