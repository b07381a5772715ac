"""Training the weight-sharing supernet with the sandwich rule.

Each step trains the largest arch, the smallest arch and `num_random` random archs on the same batch,
accumulating gradients, then takes one optimizer step (manual optimisation). With `distill > 0`, the
largest arch's predictions are also targets for the others (in-place distillation). With
`shared_warmup = f > 0`, the first ⌊f × epochs⌋ epochs train shared blocks only (every sampled arch without
task-specific layers); then each task-specific copy starts from its trained shared block, optimizer state
included, instead of from its initial weights, which it would otherwise learn from only when a random arch
picks it. With `task_specific_largest`, every step after the warm-up also trains the largest arch with every
layer task-specific, so each task's copies train at every step as the shared blocks do. With
`largest_sharing: sampled`, the largest arch after the warm-up keeps its sizes but draws its task-specific layers
as a random arch does, at every step, so no sharing pattern is trained at every step (on `demo_sharing` this
hardly changed the inherited scores: experiments/autotaskformer). Every process samples
the same archs (one seeded RNG) and branches at the same epoch, so DDP's gradient all-reduce sees the same
graph everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtnas.lit.multitask import build_optimizer, log_losses, loss_targets, weighted_loss
from mtnas.metrics import delta_m
from mtnas.space import build_space
from mtnas.supernet import ViTSupernet
from mtnas.supernet.vit import sandwich_archs
from mtnas.tasks import build_tasks, image_level


def distill_loss(task_type: str, student: Tensor, teacher: Tensor) -> Tensor:
    if task_type in ("semseg", "classification"):
        return (
            F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1), reduction="batchmean")
            / student[0, 0].numel()
        )
    if task_type == "normal":
        return (1 - F.cosine_similarity(student, teacher, dim=1)).mean()
    return F.l1_loss(student, teacher)


class SupernetLitModule(pl.LightningModule):
    uses_weight_subsets = True  # each step trains sampled subnets: DDP needs find_unused_parameters

    def __init__(
        self,
        tasks: list[str],
        available_tasks: Mapping[str, Mapping[str, Any]],
        space: Mapping[str, Any],
        supernet: Mapping[str, Any],
        optim: Mapping[str, Any],
        loss: Mapping[str, Any],
        image_size: tuple[int, int],
        seed: int = 0,
        baselines_val: Mapping[str, Mapping[str, float]] | None = None,
        delta_m_convention: str = "per_task",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.tasks = build_tasks(list(tasks), available_tasks)
        self.space = build_space(space, list(tasks))
        self.out_channels = {t: task.out_channels for t, task in self.tasks.items()}
        self.net = ViTSupernet(
            self.space,
            self.out_channels,
            tuple(image_size),
            int(supernet["patch_size"]),
            int(supernet.get("num_levels", 3)),
            image_level(self.tasks),
            {t: task.prediction_stride for t, task in self.tasks.items()},
        )
        for t, task in self.tasks.items():
            for head in self.net.heads[t].values():
                task.init_head(head)
        if supernet.get("compile", False):
            self.net.compile_blocks(str(supernet.get("compile_backend", "inductor")))
        weights = dict(loss.get("weights") or {})
        self.loss_weights = {t: float(weights.get(t, 1.0)) for t in self.tasks}
        self.loss_stride = int(loss.get("stride", 1))
        if loss.get("weighting", "fixed") == "uncertainty":  # one log σ² per task, shared by every subnet
            self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))
        self.num_random = int(supernet.get("num_random", 2))
        self.distill = float(supernet.get("distill", 0.0))
        self.shared_warmup = float(supernet.get("shared_warmup", 0.0))
        self.task_specific_largest = bool(supernet.get("task_specific_largest", False))
        self.largest_sharing = str(supernet.get("largest_sharing", "shared"))
        # Saved in checkpoints, so a run resumed after the branching never copies over trained task blocks.
        self.task_blocks_branched = False
        self.rng = random.Random(seed)
        self.eval_archs = {"largest": self.space.largest(), "smallest": self.space.smallest()}
        self.val_metrics = nn.ModuleDict(
            {
                name: nn.ModuleDict({t: task.metrics() for t, task in self.tasks.items()})
                for name in self.eval_archs
            }
        )
        self.baselines_val = {k: dict(v) for k, v in (baselines_val or {}).items()}

    def on_train_epoch_start(self) -> None:
        # The archs an epoch samples depend only on (seed, epoch): a resumed run samples what it would have.
        self.rng = random.Random(f"{self.hparams.seed}/archs/{self.current_epoch}")
        if not self.in_shared_warmup and self.shared_warmup and not self.task_blocks_branched:
            self.branch_task_blocks()

    @property
    def in_shared_warmup(self) -> bool:
        return self.current_epoch < int(self.shared_warmup * self.trainer.max_epochs)

    @torch.no_grad()
    def branch_task_blocks(self) -> None:
        """Start every task-specific block from its shared block: weights and the optimizer's moments."""
        state = self.optimizers(use_pl_optimizer=False).state
        for per_task in self.net.task_blocks.values():
            for i, block in per_task.items():
                shared = self.net.blocks[int(i)]
                for p, q in zip(block.parameters(), shared.parameters(), strict=True):
                    p.copy_(q)
                    if q in state:
                        state[p] = {k: v.clone() if torch.is_tensor(v) else v for k, v in state[q].items()}
        self.task_blocks_branched = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["task_blocks_branched"] = self.task_blocks_branched

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.task_blocks_branched = bool(checkpoint.get("task_blocks_branched", False))

    def sample_archs(self) -> list:
        if self.in_shared_warmup:
            fixed = [a.hard_sharing() for a in sandwich_archs(self.space)]
            return fixed + [self.space.sample(self.rng).hard_sharing() for _ in range(self.num_random)]
        fixed = sandwich_archs(self.space, self.task_specific_largest)
        if self.largest_sharing == "sampled":
            fixed[0] = self.space.with_sampled_sharing(fixed[0], self.rng)
        return fixed + [self.space.sample(self.rng) for _ in range(self.num_random)]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        opt = self.optimizers()
        opt.zero_grad()
        archs = self.sample_archs()
        teacher = None
        bs = batch["image"].shape[0]
        size, targets = loss_targets(self.tasks, batch, self.loss_stride)
        log_vars = getattr(self, "log_vars", None)
        for k, arch in enumerate(archs):
            preds = self.net(batch["image"], arch, size)
            total, per_task = weighted_loss(self.tasks, self.loss_weights, preds, targets, log_vars)
            if k == 0:
                log_losses(self, total, per_task, bs)
                if self.distill > 0:
                    teacher = {t: p.detach() for t, p in preds.items()}
            elif teacher is not None:
                total = total + self.distill * sum(
                    distill_loss(task.type, preds[t], teacher[t]) for t, task in self.tasks.items()
                )
            self.manual_backward(total / len(archs))
        opt.step()
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        for name, arch in self.eval_archs.items():
            preds = self.net(batch["image"], arch)
            for t in self.tasks:
                self.val_metrics[name][t].update(preds[t].float(), batch[t])

    def on_validation_epoch_end(self) -> None:
        flat = {}
        for name in self.eval_archs:
            results = {
                t: {k: float(v) for k, v in self.val_metrics[name][t].compute().items()} for t in self.tasks
            }
            for t in self.tasks:
                self.val_metrics[name][t].reset()
            flat.update({f"val/{name}/{t}/{k}": v for t, ms in results.items() for k, v in ms.items()})
            if all(t in self.baselines_val for t in self.tasks):
                dirs = {t: task.delta_m_directions for t, task in self.tasks.items()}
                flat[f"val/{name}/delta_m"] = delta_m(
                    results, self.baselines_val, dirs, self.hparams.delta_m_convention
                )
        self.log_dict(flat)

    def configure_optimizers(self):
        return build_optimizer(self, self.hparams.optim)
