from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mtnas.metrics import NormalMetrics
from mtnas.tasks.base import Task


class NormalTask(Task):
    """Camera-frame unit surface normals. Target (B, 3, H, W), zero vector = invalid.
    Loss: 1 − cosine similarity on valid pixels (the prediction is normalised first)."""

    type = "normal"
    kind = "normal"
    main_metric = "mean"
    default_delta_m_metrics = ("mean", "median", "within_11_25", "within_22_5", "within_30")

    def __init__(self, name: str, delta_m_metrics=None):
        super().__init__(name, 3, delta_m_metrics)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        valid = target.norm(dim=1) > 0.5
        if not valid.any():
            return pred.sum() * 0.0
        cos = (F.normalize(pred, dim=1) * target).sum(dim=1)
        return (1.0 - cos[valid]).mean()

    def metrics(self, **kwargs) -> NormalMetrics:
        return NormalMetrics(**kwargs)
