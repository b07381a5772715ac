"""Fitness of candidate archs with inherited supernet weights: Δm on the val split.

Val batches are loaded once and reused for every candidate; the supernet runs each arch directly
(no extraction per batch), in eval mode and without gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pytorch_lightning.utilities import move_data_to_device
from torch import Tensor

from mtnas.metrics import delta_m
from mtnas.tasks import Task


class SubnetEvaluator:
    def __init__(
        self,
        supernet: torch.nn.Module,
        tasks: Mapping[str, Task],
        batches: list[dict[str, Tensor]],
        baselines_val: Mapping[str, Mapping[str, float]],
        convention: str = "per_task",
        prepare=None,
    ):
        """`prepare(arch)`, when given, runs before each arch is scored (e.g. recalibrating its BatchNorm
        statistics)."""
        self.net, self.tasks, self.batches, self.prepare = supernet, dict(tasks), batches, prepare
        self.baselines, self.convention = baselines_val, convention
        self.dirs = {t: task.delta_m_directions for t, task in self.tasks.items()}
        self.device = next(supernet.parameters()).device

    @torch.no_grad()
    def __call__(self, archs: list) -> list[dict[str, Any]]:
        self.net.eval()
        out = []
        for arch in archs:
            if self.prepare is not None:
                self.prepare(arch)
                self.net.eval()
            # Local metrics: under DDP each process scores *other* candidates, so states must not be synced.
            metrics = {
                t: task.metrics(sync_on_compute=False).to(self.device) for t, task in self.tasks.items()
            }
            for batch in self.batches:
                preds = self.net(batch["image"].to(self.device), arch)
                for t, m in metrics.items():
                    m.update(preds[t].float(), move_data_to_device(batch[t], self.device))
            results = {t: {k: float(v) for k, v in m.compute().items()} for t, m in metrics.items()}
            out.append(
                {"delta_m": delta_m(results, self.baselines, self.dirs, self.convention), "metrics": results}
            )
        return out
