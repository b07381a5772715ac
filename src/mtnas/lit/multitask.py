"""Training, validation and test of a static multi-task (or single-task) network."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from mtnas.metrics import delta_m
from mtnas.tasks import Task, build_tasks

LOSS_WEIGHTINGS = ("fixed", "uncertainty")


class MultiTaskLitModule(pl.LightningModule):
    """Everything needed to rebuild the model is in the hyper-parameters (`model` is its `_target_` spec),
    so a checkpoint file alone restores it (`MultiTaskLitModule.load_from_checkpoint(path)`), whatever the
    method that made it."""

    def __init__(
        self,
        tasks: list[str],
        available_tasks: Mapping[str, Mapping[str, Any]],
        model: Mapping[str, Any],
        optim: Mapping[str, Any],
        loss: Mapping[str, Any],
        image_size: tuple[int, int],
        baselines_val: Mapping[str, Mapping[str, float]] | None = None,
        delta_m_convention: str = "per_task",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.tasks = build_tasks(list(tasks), available_tasks)
        self.model = build_model(model, self.tasks, image_size)
        self.weighting = loss.get("weighting", "fixed")
        self.loss_stride = int(loss.get("stride", 1))
        weights = dict(loss.get("weights") or {})
        self.loss_weights = {t: float(weights.get(t, 1.0)) for t in self.tasks}
        if self.weighting == "uncertainty":  # s_t = log σ_t², learned per task (`weighted_loss`)
            self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))
        self.val_metrics = nn.ModuleDict({t: task.metrics() for t, task in self.tasks.items()})
        self.test_metrics = nn.ModuleDict({t: task.metrics() for t, task in self.tasks.items()})
        self.baselines_val = {k: dict(v) for k, v in (baselines_val or {}).items()}
        self.delta_m_convention = delta_m_convention

    # ----------------------------------------------------------------------------------------------
    @property
    def monitor(self) -> tuple[str, str]:
        """The validation quantity that picks the best checkpoint, and its mode."""
        if len(self.tasks) == 1:
            ((name, task),) = self.tasks.items()
            return f"val/{name}/{task.main_metric}", task.directions[task.main_metric]
        if self.can_compute_delta_m:
            return "val/delta_m", "max"
        return "val/loss", "min"

    @property
    def can_compute_delta_m(self) -> bool:
        return all(t in self.baselines_val for t in self.tasks)

    def forward(self, images: Tensor, output_size: tuple[int, int] | None = None) -> dict[str, Tensor]:
        return self.model(images, output_size)

    def _losses(self, preds: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return weighted_loss(self.tasks, self.loss_weights, preds, batch, getattr(self, "log_vars", None))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        size, targets = loss_targets(self.tasks, batch, self.loss_stride)
        preds = self(batch["image"], size)
        total, per_task = self._losses(preds, targets)
        bs = batch["image"].shape[0]
        log_losses(self, total, per_task, bs)
        return total

    def _eval_step(self, batch: dict[str, Tensor], metrics: nn.ModuleDict, prefix: str) -> None:
        preds = self(batch["image"])
        total, _ = self._losses(preds, batch)
        self.log(f"{prefix}/loss", total, sync_dist=True, batch_size=batch["image"].shape[0])
        for t in self.tasks:
            metrics[t].update(preds[t].float(), batch[t])

    def _eval_epoch_end(self, metrics: nn.ModuleDict, prefix: str) -> None:
        baselines = self.baselines_val if prefix == "val" and len(self.tasks) > 1 else None
        flat = epoch_metrics(self.tasks, metrics, prefix, baselines, self.delta_m_convention)
        self.log_dict(flat, prog_bar=False)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end(self.val_metrics, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(self.test_metrics, "test")

    def configure_optimizers(self):
        return build_optimizer(self, self.hparams.optim)


def epoch_metrics(
    tasks: Mapping[str, Task],
    metrics: nn.ModuleDict,
    prefix: str,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    convention: str = "per_task",
) -> dict[str, float]:
    """The epoch's metrics as `{prefix}/<task>/<metric>` (the metrics reset for the next epoch), plus
    `{prefix}/delta_m` when `baselines` cover every task. torchmetrics syncs the sum states across processes
    inside compute()."""
    results = {t: {k: float(v) for k, v in metrics[t].compute().items()} for t in tasks}
    for t in tasks:
        metrics[t].reset()
    flat = {f"{prefix}/{t}/{k}": v for t, ms in results.items() for k, v in ms.items()}
    if baselines is not None and all(t in baselines for t in tasks):
        dirs = {t: task.delta_m_directions for t, task in tasks.items()}
        flat[f"{prefix}/delta_m"] = delta_m(results, baselines, dirs, convention)
    return flat


def build_optimizer(
    module: pl.LightningModule, cfg: Mapping[str, Any], params=None, steps_fraction: float = 1.0
):
    """The `optim` config's optimizer (`name`: adamw, or sgd with `momentum`) on `params` (default all the
    module's; learned task log σ², `log_vars`, without weight decay: decay would pull every task's weight
    towards 1), and its per-step schedule: a linear warm-up then cosine decay (`scheduler: cosine`), or the
    poly decay (1 − step/total)^`poly_power` of the dense-prediction literature (`scheduler: poly`, no
    warm-up unless `warmup_fraction` asks for one); `steps_fraction` of the batches are steps of this optimizer.

    A plain function of the step (not a stateful scheduler like OneCycleLR), so resuming with a larger
    max_epochs stretches the schedule instead of failing: the step count is restored from the
    checkpoint, the length is recomputed."""
    if params is None:
        rest = [p for name, p in module.named_parameters() if name != "log_vars"]
        log_vars = getattr(module, "log_vars", None)
        params = [
            {"params": rest},
            *([{"params": [log_vars], "weight_decay": 0.0}] if log_vars is not None else []),
        ]
    lr, wd = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    if cfg.get("name", "adamw") == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=float(cfg.get("momentum", 0.9)), weight_decay=wd)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    scheduler = cfg.get("scheduler", "cosine")
    if scheduler == "none":
        return opt
    total = max(1, int(module.trainer.estimated_stepping_batches * steps_fraction))
    default_warmup = 0.05 if scheduler == "cosine" else 0.0
    warmup = int(float(cfg.get("warmup_fraction", default_warmup)) * total)
    if scheduler == "poly":
        factor = partial(warmup_poly, warmup=warmup, total=total, power=float(cfg.get("poly_power", 0.9)))
    else:
        factor = partial(warmup_cosine, warmup=max(1, warmup), total=total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def with_second_optimizer(weights, second: torch.optim.Optimizer):
    """`configure_optimizers`' value for the weights' optimizer as `build_optimizer` returns it (with or without
    its per-step schedule) plus a second, unscheduled optimizer (a policy's or architecture's logits)."""
    if isinstance(weights, dict):
        return [weights["optimizer"], second], [weights["lr_scheduler"]]
    return [weights, second]


def warmup_poly(step: int, warmup: int, total: int, power: float = 0.9) -> float:
    """LR factor: linear warm-up over `warmup` steps (none if 0), then (1 − step/total)^power."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, 1 - min(step, total) / total) ** power


def warmup_cosine(step: int, warmup: int, total: int, final: float = 0.01) -> float:
    """LR factor: linear from 1/warmup to 1 over `warmup` steps, then cosine down to `final`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def model_spec(model: Mapping[str, Any]) -> dict[str, Any]:
    """A model's `_target_` spec. Checkpoints written before specs had `_target_` stored either a searched
    ViT subnet (`arch`, `patch_size`, `head_dim`) or a timm backbone + heads (`backbone`, `head`); both are
    read as the spec they were, so older run folders still evaluate and export."""
    spec = dict(model)
    if "_target_" in spec:
        return spec
    if spec.get("arch") is not None:
        return {"_target_": "mtnas.supernet.vit.build_vit_subnet", **spec}
    return {"_target_": "mtnas.nn.multitask.build_multitask_net", **spec}


def build_model(model: Mapping[str, Any], tasks: Mapping[str, Task], image_size) -> nn.Module:
    """The static multi-task model a spec describes (`conf/model/*.yaml`, or a searched subnet's spec)."""
    from mtnas.utils.specs import instantiate_spec

    return instantiate_spec(model_spec(model), "model", tasks=dict(tasks), image_size=tuple(image_size))


def loss_targets(
    tasks: Mapping[str, Task], batch: dict[str, Any], stride: int
) -> tuple[tuple[int, int] | None, dict[str, Any]]:
    """The training-loss resolution and targets at it (`loss.stride`).

    With stride s > 1 the heads predict at 1/s of the input size and each task reduces its target to match
    (`Task.reduce_target`), so the upsampling and the per-pixel losses cost s² less; metrics are always
    computed at full resolution."""
    if stride == 1:
        return None, batch
    h, w = batch["image"].shape[-2:]
    size = (h // stride, w // stride)
    return size, {t: task.reduce_target(batch[t], size) for t, task in tasks.items()}


def weighted_loss(
    tasks, weights: Mapping[str, float], preds, batch, log_vars: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """The total training loss and each task's: Σ w_t·L_t with fixed `weights`, or, given learned
    `log_vars` s_t = log σ_t² (`loss.weighting=uncertainty`, Kendall et al. 2018), Σ exp(−s_t)·L_t + s_t."""
    per_task = {t: task.loss(preds[t], batch[t]) for t, task in tasks.items()}
    if log_vars is None:
        return sum(weights[t] * per_task[t] for t in tasks), per_task
    total = sum(torch.exp(-s) * per_task[t] + s for s, t in zip(log_vars, tasks, strict=True))
    return total, per_task


def log_losses(
    module: pl.LightningModule, total: Tensor, per_task: Mapping[str, Tensor], batch_size: int
) -> None:
    """The training losses, and each task's learned log σ² under uncertainty weighting."""
    module.log("train/loss", total, prog_bar=True, batch_size=batch_size)
    for t, value in per_task.items():
        module.log(f"train/{t}/loss", value, batch_size=batch_size)
    log_vars = getattr(module, "log_vars", None)
    if log_vars is not None:
        for t, s in zip(per_task, log_vars.detach(), strict=True):
            module.log(f"train/{t}/log_var", s, batch_size=batch_size)


def nested_metrics(flat: Mapping[str, float], prefix: str) -> dict[str, dict[str, float]]:
    """{"test/semseg/miou": x} -> {"semseg": {"miou": x}} for one prefix (the loss is dropped); deeper keys
    keep their middle: {"val/largest/semseg/miou": x} -> {"largest/semseg": {"miou": x}} (the supernet)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        parts = key.split("/")
        if len(parts) >= 3 and parts[0] == prefix:
            out.setdefault("/".join(parts[1:-1]), {})[parts[-1]] = float(value)
    return out
