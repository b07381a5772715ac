"""AutoMTL (Zhang, Liu, Guan; NeurIPS 2022): any timm CNN → a multi-task supernet whose blocks are, per task,
shared / task-specific / skipped, the policy learnt with Gumbel-softmax.

Stages: `pretrain` (every option active, averaged) → `policy` (alternating weight steps and policy steps on
two disjoint train subsets, temperature decay, the depth-weighted sharing regulariser, and — beyond AutoMTL —
an expected-cost term that steers the policy under a params/FLOPs budget) → `derive` (the policy's most
probable arch plus `derive.samples` archs sampled from it, each scored on val with inherited weights into
`search/population.jsonl`; the chosen one becomes `arch.yaml`) → `retrain` (from scratch by default, as the
paper). Run folder: `pretrain/`, `policy/` (with `split.json`, the two train subsets), `search/`, `arch.yaml`,
`retrain/`.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtnas.errors import ConfigError, MtnasError
from mtnas.methods.searching import (
    SearchMethod,
    checked_derive,
    checked_objectives,
    checked_retrain,
    input_files,
    refuse_clipping_and_accumulation,
)
from mtnas.methods.study import Study, StudySettings
from mtnas.run import Unit, unit_seed
from mtnas.search.budget import Budget
from mtnas.space.policy import OPTIONS, PolicyArch, PolicySpace, option_counts
from mtnas.utils.checks import (
    non_negative_number,
    one_of,
    open_fraction,
    optional_positive_int,
    positive_int,
    positive_number,
)
from mtnas.utils.specs import as_dict

if TYPE_CHECKING:
    from mtnas.run import Run

SAMPLINGS = ("hard", "soft")
STATIC_MODEL = "mtnas.nn.multitask.build_multitask_net"


class PolicyMethod(SearchMethod):
    stages = ("pretrain", "policy", "derive", "retrain")
    optional_stages = ("study",)
    search_name = "policy"

    def __init__(
        self,
        name: str,
        tasks: list[str],
        model: Mapping[str, Any],
        policy: Mapping[str, Any],
        pretrain: Mapping[str, Any],
        derive: Mapping[str, Any],
        retrain: Mapping[str, Any],
        budget: Mapping[str, Any] | None,
        loss: Mapping[str, Any],
        objectives: list[str] | None = None,
        space: Mapping[str, Any] | None = None,
        supernet_ckpt: str | None = None,
        arch: str | None = None,
        study: Mapping[str, Any] | None = None,
    ):
        super().__init__(name)
        self.study_settings = StudySettings.from_config(study)
        self._policy_net = None  # built once per process, for derive and study
        self.tasks = list(tasks)
        self.model = as_dict(model)
        if self.model.get("_target_") != STATIC_MODEL or not (self.model.get("backbone") or {}).get("name"):
            raise ConfigError(
                "model",
                f"method={name} turns a timm CNN into a supernet: it needs a hard-sharing `model` spec "
                f"({STATIC_MODEL}, e.g. model=resnet18 or model=mobilenetv3) with `backbone.name`.",
            )
        import timm

        backbone = self.model["backbone"]["name"]
        if backbone not in timm.list_models():
            raise ConfigError(
                "model.backbone.name", f"{backbone!r} is not a timm model name (see timm.list_models())."
            )
        if loss.get("weighting", "fixed") != "fixed":
            raise ConfigError(
                "loss.weighting", f"method={name} trains with fixed task weights; use loss.weighting=fixed."
            )
        self.space_note = space is not None  # a ViT space from a recipe is not this method's: said at check
        self.policy = self._check_policy(dict(policy))
        self.pretrain = dict(pretrain)
        optional_positive_int("method.pretrain.max_epochs", self.pretrain.get("max_epochs"))
        self.derive = checked_derive(derive)
        self.retrain = checked_retrain(retrain)
        self.budget = Budget.from_config(budget)
        self.objectives = checked_objectives(objectives)
        self.arch_file, self.supernet_ckpt = input_files(arch, supernet_ckpt)
        if self.supernet_ckpt is not None and not zipfile.is_zipfile(self.supernet_ckpt):
            raise ConfigError(
                "supernet_ckpt",
                f"{supernet_ckpt} is not a checkpoint; expected an automtl run's policy/last.ckpt.",
            )
        self.space: PolicySpace | None = (
            None  # the backbone's blocks, found at `check` (needs the image size)
        )
        self.layout = self.costs = None

    @staticmethod
    def _check_policy(p: dict[str, Any]) -> dict[str, Any]:
        options = p.get("options", list(OPTIONS))
        if (
            not isinstance(options, list | tuple)
            or "shared" not in options
            or any(o not in OPTIONS for o in options)
        ):
            raise ConfigError(
                "method.policy.options", f"got {options!r}; expected `shared` plus any of {list(OPTIONS)}."
            )
        p["options"] = [o for o in OPTIONS if o in options]
        one_of("method.policy.sampling", p.get("sampling"), SAMPLINGS)
        positive_number("method.policy.tau", p.get("tau"))
        positive_number("method.policy.tau_decay", p.get("tau_decay"), upper=1.0)
        positive_int("method.policy.weight_steps", p.get("weight_steps"))
        positive_int("method.policy.policy_steps", p.get("policy_steps"))
        positive_number("method.policy.lr", p.get("lr"))
        non_negative_number("method.policy.weight_decay", p.get("weight_decay"))
        non_negative_number("method.policy.share_weight", p.get("share_weight"))
        positive_number("method.policy.reg_slope", p.get("reg_slope"))
        non_negative_number("method.policy.budget_weight", p.get("budget_weight"))
        open_fraction("method.policy.split", p.get("split"))
        optional_positive_int("method.policy.max_epochs", p.get("max_epochs"))
        if not isinstance(p.get("task_bn", False), bool):
            raise ConfigError("method.policy.task_bn", f"got {p['task_bn']!r}; expected true or false.")
        return p

    # -- run folder ---------------------------------------------------------------------------------
    @staticmethod
    def stage_dir(run: Run, stage: str) -> Path:
        return run.out / stage

    def trained_dirs(self, run: Run) -> list[Path]:
        return [run.out / self.final_folder, run.out / "policy", run.out / "pretrain"]

    def describe_arch(self, arch: Mapping[str, Any]) -> str:
        return PolicyArch.from_dict(arch).describe()

    def arch_columns(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        return option_counts(PolicyArch.from_dict(arch))

    # -- checks before any work ---------------------------------------------------------------------
    def check(self, run: Run, plan: tuple[str, ...]) -> None:
        """Split the backbone into blocks on the run's image size (a model it cannot split is refused at
        `model.backbone.name`), read `arch=`, and check the budget against the space's smallest and largest
        archs."""
        from mtnas.supernet.policy import layout_and_costs

        if self.space_note:
            run.announce(
                f"method={self.name} searches the blocks of model.backbone.name={self.model['backbone']['name']}; "
                "the recipe's ViT `space` is not used"
            )
        refuse_clipping_and_accumulation(run, self.name, "weights, policy")
        spec = {**self.model, "backbone": {**self.model["backbone"], "checkpoint": None}}
        self.layout, self.costs = layout_and_costs(
            spec, run.task_objs, run.image_size, bool(self.policy.get("task_bn", False))
        )
        self.space = PolicySpace(
            tuple(self.tasks), tuple(self.layout.node_names), tuple(self.policy["options"])
        )
        if self.arch_file is not None:
            self.space.read_arch(self.arch_file)
        self.budget.check_feasible(
            self.cost(run, self.space.smallest()), self.cost(run, self.space.largest())
        )

    # -- models and cost ------------------------------------------------------------------------------
    def subnet_model(self, arch: PolicyArch) -> dict[str, Any]:
        from mtnas.supernet.policy import policy_subnet_spec

        return policy_subnet_spec(arch, self.model, bool(self.policy.get("task_bn", False)))

    def baseline_model(self, run: Run) -> dict[str, Any]:
        """Single-task baselines: the hard-sharing model of the same backbone, one task each."""
        return self.model

    def analytic_cost(self, run: Run, arch: PolicyArch) -> dict[str, float]:
        from mtnas.supernet.policy import arch_cost

        return arch_cost(arch, self.layout, self.costs)

    def inherited_weights(self, run: Run, arch: PolicyArch) -> dict[str, Any]:
        return self.load_policy(run).net.extract(arch).state_dict()

    def lit_module(self, run: Run, stage: str):
        from mtnas.lit.policy import PolicyLitModule

        limits = {"params": self.budget.params_max, "flops": self.budget.flops_max}
        return PolicyLitModule(
            tasks=self.tasks,
            available_tasks=run.available,
            model=self.model,
            policy=self.policy,
            optim=run.optim(),
            loss=run.section("loss"),
            image_size=run.image_size,
            stage=stage,
            budget={k: v for k, v in limits.items() if v is not None},
            baselines_val=run.baselines_val(),
            delta_m_convention=run.cfg.delta_m.convention,
        )

    def check_same_supernet(self, module, path: Path, key: str | None) -> None:
        """A policy supernet trained with another backbone, heads, options or per-task norms cannot be derived
        from, retrained from or continued here: say so instead of failing in `load_state_dict`."""
        trained, here = module.hparams, {"model": self.model, "policy": self.policy}
        for name, now, then in (
            (
                "model.backbone.name",
                here["model"]["backbone"].get("name"),
                trained.model["backbone"].get("name"),
            ),
            ("model.head", dict(here["model"].get("head") or {}), dict(trained.model.get("head") or {})),
            (
                "model.min_reduction",
                here["model"].get("min_reduction", 4),
                trained.model.get("min_reduction", 4),
            ),
            (
                "method.policy.options",
                list(here["policy"]["options"]),
                list(trained.policy.get("options", OPTIONS)),
            ),
            (
                "method.policy.task_bn",
                bool(here["policy"].get("task_bn")),
                bool(trained.policy.get("task_bn")),
            ),
        ):
            if now != then:
                raise ConfigError(
                    key or name,
                    f"{path} was trained with {name}={then!r}, this run has {now!r}: use the same setting, "
                    "or a new run folder.",
                )

    def load_policy(self, run: Run):
        """The trained policy supernet: `supernet_ckpt=`, else this folder's (or a linked run's) policy/."""
        from mtnas.lit.checkpoint import load_checkpoint

        if self.supernet_ckpt is not None:
            run.record_source("policy", self.supernet_ckpt.resolve())
            module = load_checkpoint(self.supernet_ckpt, ("policy",), "supernet_ckpt", self.tasks)
            self.check_same_supernet(module, self.supernet_ckpt, "supernet_ckpt")
            return module
        for run_dir in [run.out, *run.linked_runs()]:
            path = run_dir / "policy" / "last.ckpt"
            recorded = run.sources(run_dir).get("policy")
            if (run_dir / "policy" / "fit.json").exists() and path.is_file():
                break
            if recorded and Path(recorded).is_file():
                path = Path(recorded)
                break
        else:
            raise MtnasError(
                f"{run.out / 'policy' / 'last.ckpt'} does not exist: train the policy first (stage=policy or "
                "stage=all), pass supernet_ckpt=/path/to/policy/last.ckpt, or retrain from scratch with "
                "method.retrain.init=scratch."
            )
        if path.parent.parent != run.out:
            run.announce(f"policy: using {path} (from another run folder; recorded in sources.json)")
            run.record_source("policy", path)
        module = load_checkpoint(path, ("policy",), tasks=self.tasks)
        self.check_same_supernet(module, path, None)
        return module

    # -- stages -------------------------------------------------------------------------------------
    def run_stage(self, stage: str, run: Run) -> None:
        {
            "pretrain": self.train_pretrain,
            "policy": self.train_policy,
            "derive": self.derive_arch,
            "retrain": self.retrain_arch,
            "study": lambda run: Study(self, run, self.study_settings)(),
        }[stage](run)

    def reuses_policy(self, run: Run) -> bool:
        return self.supernet_ckpt is not None or "policy" in run.sources()

    def train_pretrain(self, run: Run) -> None:
        if self.reuses_policy(run):
            run.announce("pretrain: the policy comes from another run folder, nothing to pre-train here")
            return
        unit = Unit("pretrain", self.stage_dir(run, "pretrain"), tuple(self.tasks))
        run.seed_unit(unit)
        run.fit(unit, self.lit_module(run, "pretrain"), self.pretrain.get("max_epochs"))

    def train_policy(self, run: Run) -> None:
        import torch

        from mtnas.lit.checkpoint import load_checkpoint
        from mtnas.utils.io import read_json

        if self.reuses_policy(run):
            run.announce(
                f"policy: using {self.supernet_ckpt or run.sources()['policy']}, not training one here"
            )
            return
        unit = Unit("policy", self.stage_dir(run, "policy"), tuple(self.tasks))
        split_file = unit.dir / "split.json"
        if split_file.exists():
            split = read_json(split_file)
        else:
            weights, policy = run.dm.split_train(float(self.policy["split"]), unit_seed(run.seed, "split"))
            split = {"fraction": float(self.policy["split"]), "weights": weights, "policy": policy}
            run.write_json(split_file, split)
        run.seed_unit(unit)
        module = self.lit_module(run, "policy")
        if not (unit.dir / "last.ckpt").exists() and not (unit.dir / "fit.json").exists():
            pretrained = self.stage_dir(run, "pretrain") / "last.ckpt"
            if pretrained.exists():
                trained = load_checkpoint(pretrained, ("policy",), tasks=self.tasks)
                self.check_same_supernet(trained, pretrained, None)
                state = trained.net.state_dict()
                state["policy_logits"] = torch.zeros_like(module.net.policy_logits)
                module.net.load_state_dict(state)
            else:
                run.announce("policy: no pretrain/last.ckpt, starting from the backbone's initial weights")
        rounds = (int(self.policy["weight_steps"]), int(self.policy["policy_steps"]))
        run.dm.alternating = ((split["weights"], split["policy"]), rounds)
        try:
            run.fit(unit, module, self.policy.get("max_epochs"))
        finally:
            run.dm.alternating = None

    def _net(self, run: Run):
        if self._policy_net is None:
            self._policy_net = self.load_policy(run).net.to(run.device).eval()
        return self._policy_net

    def make_evaluator(self, run: Run):
        """Val Δm with the policy supernet's weights (`derive.val_batches` batches), BatchNorm recalibrated per
        arch on `derive.bn_batches` train batches."""
        net = self._net(run)
        prepare = None
        bn_batches = int(self.derive.get("bn_batches", 0))
        if bn_batches:
            # Train images without augmentation: the statistics of the data the archs are scored on.
            train = run.dm.plain_train_dataloader()
            images = [b["image"].to(run.device) for _, b in zip(range(bn_batches), train, strict=False)]
            prepare = lambda arch: net.recalibrate(arch, images)  # noqa: E731
        return self.scorer(run, net, self.derive.get("val_batches"), prepare)

    def hard_sharing_archs(self, run: Run, searched: PolicyArch, band: float = 0.0) -> list[PolicyArch]:
        """Hard sharing in this space: every block shared by every task, none skipped (one arch, whatever its
        params and the band; the budget does not change it)."""
        return [self.space.uniform("shared")]

    def derive_arch(self, run: Run) -> None:
        """The policy's most probable arch and `derive.samples` archs drawn from it, scored on val with
        inherited weights; `derive.pick`: the most probable (when within the budget), or the best val Δm."""
        import torch

        if self.already_searched(run, "derive"):
            return
        started = time.perf_counter()
        net = self._net(run)
        generator = torch.Generator().manual_seed(unit_seed(run.seed, "derive"))
        samples = (net.sample_arch(generator) for _ in range(int(self.derive.get("samples", 0))))
        scored, best, how = self.choose_derived(
            run,
            "derive",
            [net.export(), *samples],
            ("the policy's most probable arch", "the best of the policy's samples"),
            "method.policy.budget_weight",
        )
        expected = float(net.expected_cost("params").detach())
        run.announce(
            f"derive: {len(set(map(id, scored)))} distinct archs scored in {time.perf_counter() - started:.0f} s; "
            f"expected params under the policy {expected / 1e6:.3f} M"
            + (f" (budget {self.budget.params_max / 1e6:.3f} M)" if self.budget.params_max else "")
            + f"; chosen {self._searched.describe()} ({how}, val Δm {best['delta_m']:+.2f} %, "
            f"{best['cost']['params'] / 1e6:.3f} M params) → {self.arch_path(run)}"
        )
