"""Training MTNAS's cell supernets with GDAS: alternating weight steps and architecture steps.

The data module alternates batches from two disjoint train subsets (first-order DARTS's train / held-out
split). A batch of the first trains the weights on gates sampled from the architecture logits (hard Gumbel,
detached: one path runs); a batch of the second trains the logits through the straight-through gates, plus,
under a params/FLOPs budget, relu(E[cost] / limit − 1). The temperature falls linearly from `tau_max` to
`tau_min` over the arch steps. Three phases (`phase`):

- `presearch`: the backbone cells (normal, reduce) on a classification set (`CellClassifier`);
- `branch`: every task's branch cells on a frozen backbone of the pre-searched genotype — one backbone
  forward per batch serves every branch, each trained with its own task's loss only;
- `backbone`: the backbone cells again (logits from the pre-search) under the joint multi-task loss, with
  the searched branches attached; each task's loss is divided by its loss at the end of the branch stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtnas.lit.multitask import build_optimizer, epoch_metrics, loss_targets, with_second_optimizer
from mtnas.nn.cells import num_edges
from mtnas.search.gdas import ArchitectureLogits, tau_at
from mtnas.space.cells import CellArch, derive_genotype
from mtnas.supernet.cells import CellClassifier, CellLayout, CellSupernet, genotype_gates
from mtnas.tasks import build_tasks

PHASES = ("presearch", "branch", "backbone")


class CellSearchLitModule(pl.LightningModule):
    uses_weight_subsets = True  # each step runs the ops one sample picks: DDP needs find_unused_parameters

    def __init__(
        self,
        cell_search: str,
        tasks: list[str],
        available_tasks: Mapping[str, Mapping[str, Any]],
        network: Mapping[str, Any],
        ops: list[str],
        search: Mapping[str, Any],
        optim: Mapping[str, Any],
        loss: Mapping[str, Any],
        image_size: tuple[int, int],
        num_classes: int | None = None,
        fixed: Mapping[str, Any] | None = None,
        loss_scales: Mapping[str, float] | None = None,
        budget: Mapping[str, float] | None = None,
        baselines_val: Mapping[str, Mapping[str, float]] | None = None,
        delta_m_convention: str = "per_task",
    ):
        """`cell_search`: the phase; `fixed`: the genotypes a phase does not search ({group: genotype}, from
        the previous stage); `loss_scales`: per-task loss divisors of the backbone phase."""
        super().__init__()
        if cell_search not in PHASES:
            raise ValueError(f"cell_search must be one of {PHASES}, got {cell_search!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.phase = cell_search
        self.layout = CellLayout(**dict(network))
        self.ops = tuple(ops)
        shape = (num_edges(self.layout.nodes), len(self.ops))
        if self.phase == "presearch":
            self.tasks = {}
            self.net = CellClassifier(self.layout, self.ops, int(num_classes))
            searched = ["normal", "reduce"]
        else:
            self.tasks = build_tasks(list(tasks), available_tasks)
            self.net = CellSupernet(self.layout, self.ops, self.tasks)
            searched = (
                ["normal", "reduce"] if self.phase == "backbone" else [f"branch/{t}" for t in self.tasks]
            )
            self.val_metrics = nn.ModuleDict({t: task.metrics() for t, task in self.tasks.items()})
        self.arch = ArchitectureLogits({g: shape for g in searched})
        self.fixed = {
            g: tuple(tuple((op, int(s)) for op, s in node) for node in v) for g, v in (fixed or {}).items()
        }
        weights = dict(loss.get("weights") or {})
        self.loss_weights = {t: float(weights.get(t, 1.0)) for t in self.tasks}
        self.loss_scales = {t: float((loss_scales or {}).get(t, 1.0)) for t in self.tasks}
        self.loss_stride = int(loss.get("stride", 1))
        self.budget = {k: float(v) for k, v in (budget or {}).items() if k in ("params", "flops")}
        self.baselines_val = {k: dict(v) for k, v in (baselines_val or {}).items()}
        self.register_buffer("arch_steps", torch.zeros((), dtype=torch.long))
        # Per-task training loss, averaged over the last weight steps: the backbone phase's loss scales.
        self.register_buffer("loss_ema", torch.zeros(len(self.tasks)))
        if self.phase == "branch":
            for p in self.net.backbone.parameters():
                p.requires_grad_(False)

    # -- architecture -------------------------------------------------------------------------------------
    @property
    def search(self) -> Mapping[str, Any]:
        return self.hparams.search

    @property
    def tau(self) -> float:
        total = self._total_arch_steps()
        return tau_at(
            int(self.arch_steps), total, float(self.search["tau_max"]), float(self.search["tau_min"])
        )

    def _total_arch_steps(self) -> int:
        try:
            return max(1, int(self.trainer.estimated_stepping_batches * self._shares()[1]))
        except (RuntimeError, AttributeError):  # not attached to a trainer
            return 1

    @property
    def warming_up(self) -> bool:
        """The first `warmup_epochs` epochs train only the weights (every batch a weight step): ops with
        parameters start untrained, and logits updated against them favour the parameter-free ops."""
        return self.current_epoch < int(self.search.get("warmup_epochs", 0))

    def _shares(self) -> tuple[float, float]:
        """The shares of all batches that are weight steps and architecture steps (warm-up included)."""
        w, a = int(self.search["weight_steps"]), int(self.search["arch_steps"])
        epochs = max(1, int(self.trainer.max_epochs or 1))
        warm = min(epochs, int(self.search.get("warmup_epochs", 0))) / epochs
        return warm + (1 - warm) * w / (w + a), (1 - warm) * a / (w + a)

    def derived(self) -> dict[str, tuple]:
        """The genotypes the logits give now (with the collapse guard), plus the fixed ones."""
        max_skip = self.search.get("max_skip")
        probs = self.arch.probabilities()
        out = dict(self.fixed)
        for g, p in probs.items():
            out[g] = derive_genotype(p.detach().cpu().tolist(), self.ops, self.layout.nodes, max_skip)
        return out

    def derived_arch(self) -> CellArch:
        return CellArch.from_groups(self.derived())

    def gates(self, sampled: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Sampled gates of the searched groups plus one-hot gates of the fixed ones."""
        out = dict(sampled)
        for g, genotype in self.fixed.items():
            out[g] = self._one_hot(genotype)
        return out

    def _one_hot(self, genotype) -> Tensor:
        return genotype_gates(genotype, self.ops).to(self.device)

    def expected_cost(self, key: str, image_size: tuple[int, int]) -> Tensor:
        """Expected cost of the derived composite arch under the logits: the fixed parts, the fixed groups'
        chosen ops, and per searched edge Σ p·cost × the share of its node's edges a derived cell keeps."""
        costs = self.net.cost_tables(image_size)
        keep = self.net.edge_keep_share()
        searched = {g: costs["tables"][g][key] for g in self.arch.names}
        total = self.arch.expected(searched, {g: keep for g in searched})
        fixed = costs["fixed"][key] + sum(
            float((costs["tables"][g][key] * self._one_hot(gen).cpu()).sum()) for g, gen in self.fixed.items()
        )
        return total + fixed

    def budget_penalty(self, image_size: tuple[int, int]) -> Tensor:
        total = self.arch.entropy().new_zeros(())
        for key, limit in self.budget.items():
            total = total + F.relu(self.expected_cost(key, image_size) / limit - 1)
        return total

    # -- training -------------------------------------------------------------------------------------------
    def _losses(self, batch: dict[str, Any], gates: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if self.phase == "presearch":
            loss = F.cross_entropy(self.net(batch["image"], gates), batch["label"])
            return loss, {"classes": loss}
        size, targets = loss_targets(self.tasks, batch, self.loss_stride)
        images = batch["image"]
        hw = tuple(images.shape[-2:])
        if self.phase == "branch":
            self.net.backbone.eval()  # frozen, its BatchNorm statistics too (Lightning sets train mode)
            with torch.no_grad():  # one forward serves every branch
                levels = self.net.features(images, gates)
        else:
            levels = self.net.features(images, gates)
        preds = self.net.heads(levels, hw, gates, size)
        per_task = {t: task.loss(preds[t], targets[t]) for t, task in self.tasks.items()}
        total = sum(self.loss_weights[t] * per_task[t] / self.loss_scales[t] for t in self.tasks)
        return total, per_task

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        opt_w, opt_a = self.optimizers()
        opt_w.zero_grad()
        opt_a.zero_grad()
        bs = batch["image"].shape[0]
        sampled = self.arch.sample(self.tau)
        if int(batch["subset"][0]) == 0 or self.warming_up:  # a weight step (first train subset, or warm-up)
            total, per_task = self._losses(batch, self.gates({g: v.detach() for g, v in sampled.items()}))
            self.manual_backward(total)
            opt_w.step()
            sched = self.lr_schedulers()
            if sched is not None:
                sched.step()
            if self.tasks:
                current = torch.stack([per_task[t].detach().float() for t in self.tasks])
                self.loss_ema.copy_(
                    torch.where(self.loss_ema > 0, 0.9 * self.loss_ema + 0.1 * current, current)
                )
            self.log("train/loss", total, prog_bar=True, batch_size=bs)
            for t, v in per_task.items():
                self.log(f"train/{t}/loss", v, batch_size=bs)
            return
        total, _ = self._losses(batch, self.gates(sampled))
        objective = total
        if self.budget and self.phase != "presearch":
            penalty = self.budget_penalty(tuple(batch["image"].shape[-2:]))
            objective = objective + float(self.search["budget_weight"]) * penalty
            self.log("search/budget_penalty", penalty, batch_size=bs)
        self.manual_backward(objective)
        opt_a.step()
        self.arch_steps += 1
        self.log_dict(
            {"search/loss": total, "search/tau": self.tau, "search/entropy": self.arch.entropy()},
            batch_size=bs,
        )

    # -- validation: the arch the logits give now -----------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from mtnas.supernet.norms import batch_statistics

        arch_gates = self.gates(
            {g: self._one_hot(gen) for g, gen in self.derived().items() if g in self.arch.names}
        )
        # Running statistics mix every sampled arch (the frozen backbone's were re-estimated for its genotype).
        with batch_statistics(self.net.branches if self.phase == "branch" else self.net):
            if self.phase == "presearch":
                logits = self.net(batch["image"], arch_gates)
            else:
                preds = self.net(batch["image"], gates=arch_gates)
        if self.phase == "presearch":
            correct = (logits.argmax(1) == batch["label"]).float().sum()
            self.log("val/classes/top1", correct / batch["label"].numel(), batch_size=batch["label"].numel())
            return
        for t in self.tasks:
            self.val_metrics[t].update(preds[t] if isinstance(preds[t], dict) else preds[t].float(), batch[t])

    def on_validation_epoch_end(self) -> None:
        if self.phase == "presearch":
            self.log("val/search/entropy", self.arch.entropy())
            return
        flat = epoch_metrics(
            self.tasks, self.val_metrics, "val", self.baselines_val, self.hparams.delta_m_convention
        )
        flat["val/search/entropy"] = float(self.arch.entropy())
        flat["val/search/params"] = float(
            self.net.cost(self.derived_arch(), tuple(self.hparams.image_size))["params"]
        )
        self.log_dict(flat)

    def configure_optimizers(self):
        params = [p for n, p in self.named_parameters() if not n.startswith("arch.") and p.requires_grad]
        weights = build_optimizer(self, self.hparams.optim, params, self._shares()[0])
        arch = torch.optim.Adam(
            self.arch.parameters(),
            lr=float(self.search["arch_lr"]),
            betas=(0.5, 0.999),
            weight_decay=float(self.search["arch_weight_decay"]),
        )
        return with_second_optimizer(weights, arch)
