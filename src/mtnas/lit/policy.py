"""Training AutoMTL's policy supernet: pre-training with every option, then alternating weight and policy steps.

`stage="pretrain"`: each step runs every option of every block, averaged (uniform weights), and trains the
weights. `stage="policy"`: the data module alternates batches from two disjoint train subsets (AutoMTL's
train1/train2); a batch of the first trains the weights on an arch sampled from the policy (Gumbel-softmax,
straight-through, only the chosen options computed), a batch of the second trains the policy logits (Adam)
on the task losses plus the depth-weighted sharing regulariser and, under a params/FLOPs budget, the
expected-cost term. The temperature decays by `tau_decay` after each policy round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtnas.lit.multitask import (
    build_optimizer,
    epoch_metrics,
    loss_targets,
    weighted_loss,
    with_second_optimizer,
)
from mtnas.space.policy import OPTIONS, option_counts
from mtnas.supernet.policy import PolicySupernet
from mtnas.tasks import build_tasks

STAGES = ("pretrain", "policy")


class PolicyLitModule(pl.LightningModule):
    uses_weight_subsets = True  # each step runs the options one arch picks: DDP needs find_unused_parameters

    def __init__(
        self,
        tasks: list[str],
        available_tasks: Mapping[str, Mapping[str, Any]],
        model: Mapping[str, Any],
        policy: Mapping[str, Any],
        optim: Mapping[str, Any],
        loss: Mapping[str, Any],
        image_size: tuple[int, int],
        stage: str = "policy",
        budget: Mapping[str, float] | None = None,
        baselines_val: Mapping[str, Mapping[str, float]] | None = None,
        delta_m_convention: str = "per_task",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.tasks = build_tasks(list(tasks), available_tasks)
        self.net = PolicySupernet(
            model["backbone"],
            self.tasks,
            tuple(image_size),
            model.get("head"),
            int(model.get("min_reduction", 4)),
            tuple(policy.get("options", OPTIONS)),
            bool(policy.get("task_bn", False)),
        )
        weights = dict(loss.get("weights") or {})
        self.loss_weights = {t: float(weights.get(t, 1.0)) for t in self.tasks}
        self.loss_stride = int(loss.get("stride", 1))
        self.budget = {k: float(v) for k, v in (budget or {}).items() if k in ("params", "flops")}
        # Policy steps taken: the temperature schedule follows it, and it is saved with the checkpoint.
        self.register_buffer("policy_steps", torch.zeros((), dtype=torch.long))
        self.val_metrics = nn.ModuleDict({t: task.metrics() for t, task in self.tasks.items()})
        self.baselines_val = {k: dict(v) for k, v in (baselines_val or {}).items()}

    @property
    def policy(self) -> Mapping[str, Any]:
        return self.hparams.policy

    @property
    def tau(self) -> float:
        """τ₀ · decay^(completed policy rounds)."""
        rounds = int(self.policy_steps) // int(self.policy["policy_steps"])
        return float(self.policy["tau"]) * float(self.policy["tau_decay"]) ** rounds

    def budget_penalty(self) -> Tensor:
        """Σ over limited costs of relu(E[cost] / limit − 1): zero once the policy's expected cost fits."""
        total = self.net.policy_logits.new_zeros(())
        for key, limit in self.budget.items():
            total = total + F.relu(self.net.expected_cost(key) / limit - 1)
        return total

    def _task_loss(self, batch: dict[str, Any], forward) -> tuple[Tensor, dict[str, Tensor]]:
        size, targets = loss_targets(self.tasks, batch, self.loss_stride)
        return weighted_loss(self.tasks, self.loss_weights, forward(batch["image"], size), targets)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        opt_w, opt_p = self.optimizers()
        opt_w.zero_grad()
        opt_p.zero_grad()
        bs = batch["image"].shape[0]
        if self.hparams.stage == "pretrain":
            total, per_task = self._task_loss(
                batch, lambda x, size: self.net.forward_soft(x, self.net.uniform_weights(), size)
            )
            self.manual_backward(total)
            self._weight_step(opt_w)
            self._log_losses("train", total, per_task, bs)
            return
        soft = self.policy["sampling"] == "soft"
        logits = self.net.policy_logits + self.net.option_mask
        gates = F.gumbel_softmax(logits, tau=self.tau, hard=not soft, dim=-1)
        if soft:
            forward = lambda x, size, g: self.net.forward_soft(x, g, size)  # noqa: E731
        else:
            forward = lambda x, size, g: self.net(x, output_size=size, gates=g)  # noqa: E731
        if int(batch["subset"][0]) == 0:  # a weight step, on the first train subset
            g = gates.detach()
            total, per_task = self._task_loss(batch, lambda x, size: forward(x, size, g))
            self.manual_backward(total)
            self._weight_step(opt_w)
            self._log_losses("train", total, per_task, bs)
            return
        total, per_task = self._task_loss(batch, lambda x, size: forward(x, size, gates))
        reg = self.net.sharing_regulariser(float(self.policy["reg_slope"]))
        objective = total + float(self.policy["share_weight"]) * reg
        if self.budget:
            penalty = self.budget_penalty()
            objective = objective + float(self.policy["budget_weight"]) * penalty
            self.log("policy/budget_penalty", penalty, batch_size=bs)
        self.manual_backward(objective)
        opt_p.step()
        self.policy_steps += 1
        self.log_dict(
            {"policy/loss": total, "policy/regulariser": reg, "policy/tau": self.tau}, batch_size=bs
        )

    def _weight_step(self, opt) -> None:
        opt.step()
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()

    def _log_losses(self, prefix: str, total: Tensor, per_task: dict[str, Tensor], bs: int) -> None:
        self.log(f"{prefix}/loss", total, prog_bar=True, batch_size=bs)
        for t, v in per_task.items():
            self.log(f"{prefix}/{t}/loss", v, batch_size=bs)

    # -- validation: the arch the policy would export now -------------------------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.hparams.stage == "pretrain":
            preds = self.net.forward_soft(batch["image"], self.net.uniform_weights())
        else:
            preds = self.net(batch["image"], self.net.export())
        for t in self.tasks:
            self.val_metrics[t].update(preds[t].float(), batch[t])

    def on_validation_epoch_end(self) -> None:
        flat = epoch_metrics(
            self.tasks, self.val_metrics, "val", self.baselines_val, self.hparams.delta_m_convention
        )
        if self.hparams.stage == "policy":
            arch = self.net.export()
            flat.update({f"val/policy/{o}": float(n) for o, n in option_counts(arch).items()})
            flat["val/policy/params"] = float(self.net.cost(arch)["params"])
            flat["val/policy/expected_params"] = float(self.net.expected_cost("params"))
        self.log_dict(flat)

    def configure_optimizers(self):
        w, p = int(self.policy["weight_steps"]), int(self.policy["policy_steps"])
        fraction = 1.0 if self.hparams.stage == "pretrain" else w / (w + p)
        weights = build_optimizer(self, self.hparams.optim, self.net.weight_parameters(), fraction)
        policy = torch.optim.Adam(
            self.net.policy_parameters(),
            lr=float(self.policy["lr"]),
            weight_decay=float(self.policy["weight_decay"]),
        )
        return with_second_optimizer(weights, policy)
