"""MTNAS (Liu et al., ACCV 2020): a multi-task net of DARTS cells searched in two stages — each task's branch
first, then the shared backbone, which is pre-searched on a classification set and then tuned under the
joint multi-task loss. Its home setting is detection + segmentation.

Stages (run folder):
- `presearch/`: the backbone cells searched (GDAS) on a classification set — an ImageFolder tree
  (`method.presearch.data.root`, e.g. ImageNet) or the synthetic object crops;
- `branch/`: every task's branch cells searched with its own loss on the frozen pre-searched backbone, all
  branches in one run sharing one backbone forward per batch; `branch/<task>/genotype.yaml` per task;
- `backbone/`: the backbone cells tuned (logits and weights from the pre-search) under the joint loss with
  the searched branches attached, each task's loss divided by its loss at the end of the branch stage;
- `search/`: the composite arch the logits give (with the collapse guard) and `derive.samples` archs drawn
  from them, scored on val with the supernet's weights → `arch.yaml` (within the budget);
- `retrain/`: the composite arch as a plain `CellNet`, from scratch by default;
- `reference/`: the recipe's hand-made hard-sharing `model` by the same recipe, reported beside it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

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
from mtnas.nn.cells import OPS
from mtnas.run import Unit, unit_seed
from mtnas.search.budget import Budget
from mtnas.space.cells import CellArch, CellSpace, count_op, derive_genotype
from mtnas.supernet.cells import CellLayout, cell_net_spec
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

BALANCING = ("branch_loss", "none")


class TwoStageMethod(SearchMethod):
    stages = ("presearch", "branch", "backbone", "search", "retrain")
    optional_stages = ("study",)
    search_name = "gdas"
    reference_folder = "reference"

    def __init__(
        self,
        name: str,
        tasks: list[str],
        model: Mapping[str, Any],
        network: Mapping[str, Any],
        ops: list[str],
        gdas: Mapping[str, Any],
        presearch: Mapping[str, Any],
        branch: Mapping[str, Any],
        backbone: Mapping[str, Any],
        derive: Mapping[str, Any],
        retrain: Mapping[str, Any],
        budget: Mapping[str, Any] | None,
        loss: Mapping[str, Any],
        reference: bool = True,
        objectives: list[str] | None = None,
        space: Mapping[str, Any] | None = None,
        supernet_ckpt: str | None = None,
        arch: str | None = None,
        study: Mapping[str, Any] | None = None,
    ):
        """`model`: the hand-made hard-sharing net the single-task baselines train and, with `reference`, the
        multi-task reference trained beside the searched net (stage `reference`)."""
        super().__init__(name)
        self.tasks = list(tasks)
        self.model = as_dict(model)
        try:
            self.layout = CellLayout(**dict(network))
        except TypeError as e:
            raise ConfigError(
                "method.network", f"{e}; settings are {list(CellLayout.__dataclass_fields__)}."
            ) from None
        ops = list(ops)
        if not ops or any(o not in OPS for o in ops) or len(set(ops)) != len(ops):
            raise ConfigError("method.ops", f"got {ops!r}; expected distinct ops from {list(OPS)}.")
        self.ops = ops
        self.space = CellSpace(tuple(self.tasks), tuple(ops), self.layout.nodes)
        self.gdas = self._check_gdas(dict(gdas))
        self.presearch = dict(presearch)
        positive_int("method.presearch.batch_size", self.presearch.get("batch_size"))
        optional_positive_int("method.presearch.max_epochs", self.presearch.get("max_epochs"))
        size = self.presearch.get("image_size")
        if not (
            isinstance(size, list | tuple)
            and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
        ):
            raise ConfigError(
                "method.presearch.image_size", f"got {size!r}; expected [height, width] in pixels."
            )
        smallest = 4 * 2 ** len(self.layout.reduction_cells)  # the stem's stride 4, ×2 per reduction cell
        if min(size) < smallest:
            raise ConfigError(
                "method.presearch.image_size",
                f"got {size!r}; the backbone reduces its input {smallest}× (stem and "
                f"{len(self.layout.reduction_cells)} reduction cells): expected each side ≥ {smallest}.",
            )
        data = dict(self.presearch.get("data") or {})
        if not data.get("root") and not data.get("synthetic"):
            raise ConfigError(
                "method.presearch.data",
                "needs `root` (an ImageFolder tree: train/<class>/*.JPEG, val/<class>/...) or a `synthetic` block.",
            )
        self.branch = dict(branch)
        optional_positive_int("method.branch.max_epochs", self.branch.get("max_epochs"))
        positive_int("method.branch.bn_batches", self.branch.get("bn_batches", 0), minimum=0)
        self.backbone = dict(backbone)
        optional_positive_int("method.backbone.max_epochs", self.backbone.get("max_epochs"))
        one_of("method.backbone.balance", self.backbone.get("balance", "branch_loss"), BALANCING)
        self.derive = checked_derive(derive)
        self.retrain = checked_retrain(retrain)
        self.budget = Budget.from_config(budget)
        self.objectives = checked_objectives(objectives)
        self.loss = dict(loss)
        if self.loss.get("weighting", "fixed") != "fixed":
            raise ConfigError(
                "loss.weighting",
                f"method={name} balances tasks itself (method.backbone.balance); use loss.weighting=fixed.",
            )
        self.reference = bool(reference)
        if self.reference:
            self.stages = (*self.stages, "reference")
        self.space_note = space is not None
        self.study_settings = StudySettings.from_config(study)
        self.arch_file, self.supernet_ckpt = input_files(arch, supernet_ckpt)
        self._cost_net = None
        self._modules: dict[str, Any] = {}

    @staticmethod
    def _check_gdas(g: dict[str, Any]) -> dict[str, Any]:
        positive_number("method.gdas.tau_max", g.get("tau_max"))
        positive_number("method.gdas.tau_min", g.get("tau_min"))
        if float(g["tau_min"]) > float(g["tau_max"]):
            raise ConfigError(
                "method.gdas.tau_min", f"{g['tau_min']} is above method.gdas.tau_max={g['tau_max']}."
            )
        positive_int("method.gdas.weight_steps", g.get("weight_steps"))
        positive_int("method.gdas.arch_steps", g.get("arch_steps"))
        positive_int("method.gdas.warmup_epochs", g.get("warmup_epochs", 0), minimum=0)
        positive_number("method.gdas.arch_lr", g.get("arch_lr"))
        non_negative_number("method.gdas.arch_weight_decay", g.get("arch_weight_decay"))
        non_negative_number("method.gdas.budget_weight", g.get("budget_weight"))
        if g.get("max_skip") is not None:
            positive_int("method.gdas.max_skip", g["max_skip"], minimum=0)
        open_fraction("method.gdas.split", g.get("split"))
        return g

    # -- run folder and checks --------------------------------------------------------------------------
    def trained_dirs(self, run: Run) -> list[Path]:
        return [run.out / self.final_folder, *self.reference_folders(run).values()]

    def reference_folders(self, run: Run) -> dict[str, Path]:
        return {"hard_sharing": run.out / self.reference_folder} if self.reference else {}

    def arch_columns(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        a = CellArch.from_dict(arch)
        return {"skip_connect": sum(count_op(g, "skip_connect") for g in a.groups().values())}

    def check(self, run: Run, plan: tuple[str, ...]) -> None:
        """Budget feasibility (the space's smallest and largest composite archs), `arch=`, the pre-search data
        folder, and the trainer settings the alternating optimizers cannot take."""
        if self.space_note:
            run.announce(
                f"method={self.name} searches DARTS cells (method.ops); the recipe's ViT `space` is not used"
            )
        refuse_clipping_and_accumulation(run, self.name, "weights, architecture")
        warmup = int(self.gdas.get("warmup_epochs", 0))
        for stage in ("presearch", "branch", "backbone"):
            epochs = getattr(self, stage).get("max_epochs") or run.cfg.trainer.get("max_epochs")
            if stage in plan and epochs is not None and warmup >= int(epochs):
                raise ConfigError(
                    "method.gdas.warmup_epochs",
                    f"is {warmup} but the {stage} stage trains {epochs} epoch(s): it would take no architecture "
                    f"step and derive cells from untouched logits. Lower it or raise method.{stage}.max_epochs.",
                )
        if self.arch_file is not None:
            self.space.read_arch(self.arch_file)
        self.budget.check_feasible(
            self.cost(run, self.space.smallest()), self.cost(run, self.space.largest())
        )
        root = (self.presearch.get("data") or {}).get("root")
        if "presearch" in plan and not root and run.cfg.data.name != "synthetic":
            run.announce(
                "presearch: no method.presearch.data.root, so the backbone is pre-searched on synthetic object "
                "crops, not a real classification set: pass method.presearch.data.root=/data/imagenet (ImageFolder)"
            )
        if "presearch" in plan and root and not (run.out / "presearch" / "fit.json").exists():
            from mtnas.data.image_folder import scan

            classes, _ = scan(Path(str(root)).expanduser(), "train")
            scan(Path(str(root)).expanduser(), "val", classes)

    # -- models and cost --------------------------------------------------------------------------------
    def subnet_model(self, arch: CellArch) -> dict[str, Any]:
        return cell_net_spec(arch, self.layout)

    def baseline_model(self, run: Run) -> dict[str, Any]:
        return self.model

    def analytic_cost(self, run: Run, arch: CellArch) -> dict[str, float]:
        import torch

        from mtnas.supernet.cells import CellSupernet

        if self._cost_net is None:
            with torch.device("meta"):
                self._cost_net = CellSupernet(self.layout, self.ops, run.task_objs)
        return self._cost_net.cost(arch, run.image_size)

    def inherited_weights(self, run: Run, arch: CellArch) -> dict[str, Any]:
        return self.load_stage(run, "backbone").net.extract(arch).state_dict()

    def hard_sharing_archs(self, run: Run, searched: CellArch | None, band: float = 0.0) -> list[CellArch]:
        """The hand-made arch of this space for the study: every edge a 3×3 separable conv on the two inputs
        (one arch, whatever the band)."""
        return [
            self.space.uniform("sep_conv_3x3" if "sep_conv_3x3" in self.space.ops else self.space.ops[-1])
        ]

    # -- stage modules -------------------------------------------------------------------------------------
    def lit_module(self, run: Run, phase: str, **kwargs):
        from mtnas.lit.cells import CellSearchLitModule

        limits = {"params": self.budget.params_max, "flops": self.budget.flops_max}
        return CellSearchLitModule(
            cell_search=phase,
            tasks=["classes"] if phase == "presearch" else self.tasks,
            available_tasks=run.available,
            network=self.layout.to_config(),
            ops=self.ops,
            search=self.gdas,
            optim=run.optim(),
            loss=self.loss,
            image_size=tuple(self.presearch["image_size"]) if phase == "presearch" else run.image_size,
            budget={k: v for k, v in limits.items() if v is not None},
            baselines_val=run.baselines_val(),
            delta_m_convention=run.cfg.delta_m.convention,
            **kwargs,
        )

    def load_stage(self, run: Run, stage: str):
        """The trained module of a stage (`supernet_ckpt=` stands for backbone/last.ckpt), loaded once."""
        from mtnas.lit.checkpoint import load_checkpoint

        if stage in self._modules:
            return self._modules[stage]
        path = run.out / stage / "last.ckpt"
        key = None
        if stage == "backbone" and self.supernet_ckpt is not None:
            path, key = self.supernet_ckpt, "supernet_ckpt"
            run.record_source("backbone", path.resolve())
        # fit.json marks a finished stage; only rank 0 writes it, so other DDP processes check the checkpoint.
        elif not path.is_file() or (run.is_writer and not (run.out / stage / "fit.json").exists()):
            raise MtnasError(
                f"{path} does not exist: run the {stage} stage first (stage={stage} or stage=all)"
                + (", or pass supernet_ckpt=/path/to/backbone/last.ckpt." if stage == "backbone" else ".")
            )
        tasks = None if stage == "presearch" else self.tasks
        module = load_checkpoint(path, ("cells",), key, tasks)
        if module.hparams.cell_search != stage:
            message = f"{path} is the {module.hparams.cell_search} stage's checkpoint, not {stage}'s."
            raise ConfigError(key, message) if key else MtnasError(message)
        if CellLayout(**dict(module.hparams.network)) != self.layout or list(module.hparams.ops) != self.ops:
            raise ConfigError(
                key or "method.network",
                f"{path} was trained with method.network={dict(module.hparams.network)} and method.ops="
                f"{list(module.hparams.ops)}; this run has {self.layout.to_config()} and {self.ops}: use the same "
                "settings, or a new run folder.",
            )
        # Only the backbone stage's supernet scores archs; the others give weights and genotypes (CPU).
        self._modules[stage] = (module.to(run.device) if stage == "backbone" else module).eval()
        return self._modules[stage]

    def split(self, run: Run, dm, folder: Path) -> dict[str, Any]:
        """The two train subsets of the alternating steps, kept in `folder/split.json`. Drawn from the seed and
        the data alone: the branch and backbone stages hold out the same half of the run's train split (and
        every DDP process draws the same)."""
        from mtnas.utils.io import read_json

        path = folder / "split.json"
        if path.exists():
            return read_json(path)
        data = "multitask" if dm is run.dm else "classification"
        weights, arch = dm.split_train(float(self.gdas["split"]), unit_seed(run.seed, "split", data))
        split = {"fraction": float(self.gdas["split"]), "weights": weights, "arch": arch}
        run.write_json(path, split)
        return split

    def fit_alternating(self, run: Run, unit: Unit, module, max_epochs, dm=None) -> None:
        dm = dm or run.dm
        split = self.split(run, dm, unit.dir)
        dm.alternating = (
            (split["weights"], split["arch"]),
            (int(self.gdas["weight_steps"]), int(self.gdas["arch_steps"])),
        )
        try:
            run.fit(unit, module, max_epochs, datamodule=dm)
        finally:
            dm.alternating = None

    # -- stages -------------------------------------------------------------------------------------------
    def run_stage(self, stage: str, run: Run) -> None:
        {
            "presearch": self.run_presearch,
            "branch": self.run_branch,
            "backbone": self.run_backbone,
            "search": self.search,
            "retrain": self.retrain_arch,
            "reference": self.train_reference,
            "study": lambda run: Study(self, run, self.study_settings)(),
        }[stage](run)

    def reuses_backbone(self, run: Run) -> bool:
        return self.supernet_ckpt is not None

    def run_presearch(self, run: Run) -> None:
        from mtnas.data.image_folder import ClassificationDataModule, classification_root

        if self.reuses_backbone(run):
            run.announce(
                "presearch: the backbone stage comes from supernet_ckpt=, nothing to pre-search here"
            )
            return
        unit = Unit("presearch", run.out / "presearch", ("classes",))
        if (unit.dir / "fit.json").exists():
            run.fit(unit, None)  # says it is done
            return
        root = classification_root(self.presearch["data"], run.cfg.paths.cache_dir, progress=run.is_writer)
        dm = ClassificationDataModule(
            root,
            tuple(self.presearch["image_size"]),
            int(self.presearch["batch_size"]),
            run.seed,
            int(run.cfg.data.get("num_workers", 0)),
        )
        run.announce(
            f"presearch: {len(dm.classes)} classes, {len(dm.train_samples)} train / {len(dm.val_samples)} val "
            f"images from {root}"
        )
        run.seed_unit(unit)
        module = self.lit_module(run, "presearch", num_classes=len(dm.classes))
        self.fit_alternating(run, unit, module, self.presearch.get("max_epochs"), dm)

    def run_branch(self, run: Run) -> None:
        if self.reuses_backbone(run):
            run.announce("branch: the backbone stage comes from supernet_ckpt=, no branch search here")
            return
        unit = Unit("branch", run.out / "branch", tuple(self.tasks))
        if (unit.dir / "fit.json").exists() and all(
            (unit.dir / t / "genotype.yaml").exists() for t in self.tasks
        ):
            run.fit(unit, None)  # says it is done
            return
        run.seed_unit(unit)
        fresh = not (unit.dir / "last.ckpt").exists() and not (unit.dir / "fit.json").exists()
        pre = self.load_stage(run, "presearch")
        backbone = {g: v for g, v in pre.derived().items() if g in ("normal", "reduce")}
        module = self.lit_module(run, "branch", fixed=backbone)
        if fresh:
            module.net.backbone.load_state_dict(pre.net.backbone.state_dict())
            self.recalibrate_backbone(run, module)
            self.announce_saving(
                run, CellArch.from_groups({**self.hard_sharing_archs(run, None)[0].groups(), **backbone})
            )
        self.fit_alternating(run, unit, module, self.branch.get("max_epochs"))
        if run.is_writer:
            trained = self.load_stage(run, "branch")
            scales = dict(zip(trained.tasks, trained.loss_ema.tolist(), strict=True))  # its own order
            for task, genotype in trained.derived().items():
                if task.startswith("branch/"):
                    t = task.split("/", 1)[1]
                    text = yaml.safe_dump(
                        {
                            "genotype": [[[op, s] for op, s in node] for node in genotype],
                            "loss_scale": scales[t],
                        },
                        sort_keys=False,
                    )
                    run.write_text(unit.dir / t / "genotype.yaml", text)

    def recalibrate_backbone(self, run: Run, module) -> None:
        """The frozen backbone's BatchNorm statistics re-estimated for its genotype on `branch.bn_batches` train
        batches of this run's data: the pre-search kept statistics of every arch it sampled, on other images."""
        from mtnas.supernet.norms import recalibrate_batchnorm

        count = int(self.branch.get("bn_batches", 0))
        if not count:
            return
        gates = {k: v.to(run.device) for k, v in module.gates({}).items() if k in ("normal", "reduce")}
        train = run.dm.plain_train_dataloader()
        images = [b["image"].to(run.device) for _, b in zip(range(count), train, strict=False)]
        backbone = module.net.backbone.to(run.device)
        recalibrate_batchnorm(backbone, lambda x: backbone(x, gates), images)
        backbone.cpu()

    def announce_saving(self, run: Run, arch: CellArch) -> None:
        """What sharing the frozen backbone's forward among the branches saves, per training image."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from mtnas.supernet.cells import CellNet

        with torch.device("meta"):
            net = CellNet(arch, self.layout, run.task_objs).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.zeros(1, 3, *run.image_size, device="meta"))
        backbone = sum(counter.get_flop_counts().get("CellNet.backbone", {}).values())
        total = counter.get_total_flops()
        t = len(self.tasks)
        separate = total + (t - 1) * backbone  # T searches: the backbone T times, each branch once
        run.announce(
            f"branch: one frozen-backbone forward per batch serves all {t} branches; {t} separate branch searches "
            f"would run it {t}×: {(t - 1) * backbone / 1e9:.4f} GFLOPs per image saved, "
            f"{100 * (t - 1) * backbone / max(1, separate):.0f} % of their forward FLOPs"
        )

    def run_backbone(self, run: Run) -> None:
        if self.reuses_backbone(run):
            run.announce(f"backbone: using {self.supernet_ckpt}, not training one here")
            return
        unit = Unit("backbone", run.out / "backbone", tuple(self.tasks))
        run.seed_unit(unit)
        fresh = not (unit.dir / "last.ckpt").exists() and not (unit.dir / "fit.json").exists()
        branch = self.load_stage(run, "branch")
        branches = {g: v for g, v in branch.derived().items() if g.startswith("branch/")}
        scales = None
        if self.backbone.get("balance", "branch_loss") == "branch_loss":
            scales = {
                t: max(float(v), 1e-6) for t, v in zip(branch.tasks, branch.loss_ema.tolist(), strict=True)
            }
        module = self.lit_module(run, "backbone", fixed=branches, loss_scales=scales)
        if fresh:
            pre = self.load_stage(run, "presearch")
            module.net.load_state_dict(branch.net.state_dict())
            with_logits = {n: p for n, p in pre.arch.logits.items()}
            for n, p in module.arch.logits.items():
                p.data.copy_(with_logits[n].data)
            if scales:
                run.announce(
                    "backbone: task losses divided by their branch-stage losses "
                    + ", ".join(f"{t} {s:.3g}" for t, s in scales.items())
                )
        self.fit_alternating(run, unit, module, self.backbone.get("max_epochs"))

    def train_reference(self, run: Run) -> None:
        unit = Unit("hard_sharing", run.out / self.reference_folder, tuple(self.tasks))
        run.fit(unit, run.lit_module(unit, self.model))

    # -- search -------------------------------------------------------------------------------------------
    def make_evaluator(self, run: Run):
        """Val Δm with the backbone stage's supernet (`derive.val_batches` batches), BatchNorm re-estimated per
        arch on `derive.bn_batches` train batches."""
        net = self.load_stage(run, "backbone").net
        prepare = None
        bn_batches = int(self.derive.get("bn_batches", 0))
        if bn_batches:
            from mtnas.supernet.norms import recalibrate_batchnorm

            train = run.dm.plain_train_dataloader()
            images = [b["image"].to(run.device) for _, b in zip(range(bn_batches), train, strict=False)]
            prepare = lambda arch: recalibrate_batchnorm(net, lambda x: net(x, arch), images)  # noqa: E731
        return self.scorer(run, net, self.derive.get("val_batches"), prepare)

    def sampled_archs(self, run: Run, count: int) -> list[CellArch]:
        """Archs drawn from the searched logits (backbone stage: normal/reduce; branch stage: the branches):
        Gumbel-perturbed logits, discretised with the collapse guard."""
        import torch

        generator = torch.Generator().manual_seed(unit_seed(run.seed, "derive"))
        logits = {}
        for stage in ("backbone", "branch"):
            if stage == "branch" and self.reuses_backbone(run):
                continue
            module = self.load_stage(run, stage)
            logits.update({g: module.arch.table(g).detach().cpu() for g in module.arch.names})
        fixed = self.load_stage(run, "backbone").derived()
        out = []
        for _ in range(count):
            groups = dict(fixed)
            for g, table in logits.items():
                u = torch.rand(table.shape, generator=generator).clamp_min(1e-20)
                probs = torch.softmax(table - torch.log(-torch.log(u)), -1)
                groups[g] = derive_genotype(
                    probs.tolist(), self.ops, self.layout.nodes, self.gdas.get("max_skip")
                )
            out.append(CellArch.from_groups(groups))
        return out

    def search(self, run: Run) -> None:
        if self.already_searched(run, "search"):
            return
        started = time.perf_counter()
        derived = self.load_stage(run, "backbone").derived_arch()
        scored, best, how = self.choose_derived(
            run,
            "search",
            [derived, *self.sampled_archs(run, int(self.derive.get("samples", 0)))],
            ("the logits' arch", "the best of the samples"),
            "method.gdas.budget_weight",
        )
        run.announce(
            f"search: {len(set(map(id, scored)))} distinct archs scored in {time.perf_counter() - started:.0f} s; "
            f"chosen {self._searched.describe()} ({how}, val Δm {best['delta_m']:+.2f} %, "
            f"{best['cost']['params'] / 1e6:.3f} M params) → {self.arch_path(run)}"
        )
