from __future__ import annotations

from torch import Tensor

from mtnas.metrics import DepthMetrics
from mtnas.tasks.base import Task


class DepthTask(Task):
    """Metric depth. Target (B, 1, H, W) float in metres, 0 = invalid. Loss: L1 on valid pixels."""

    type = "depth"
    kind = "depth"
    main_metric = "abs_err"
    default_delta_m_metrics = ("abs_err", "rel_err")

    def __init__(self, name: str, delta_m_metrics=None):
        super().__init__(name, 1, delta_m_metrics)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        valid = target > 0
        if not valid.any():
            return pred.sum() * 0.0
        return (pred[valid] - target[valid]).abs().mean()

    def metrics(self, **kwargs) -> DepthMetrics:
        return DepthMetrics(**kwargs)
