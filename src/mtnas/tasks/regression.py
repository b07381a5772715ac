from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mtnas.metrics import RegressionMetrics
from mtnas.tasks.base import Task


class RegressionTask(Task):
    """Generic dense regression with `channels` outputs (Taskonomy keypoints, curvature, reshading, texture
    and occlusion edges, Euclidean depth, autoencoding …). Target (B, C, H, W) float, NaN = invalid.
    Loss: L1 (`loss: l1`, the Taskonomy convention) or `l2`, over valid values."""

    type = "regression"
    kind = "regression"
    main_metric = "abs_err"
    default_delta_m_metrics = ("abs_err",)

    def __init__(self, name: str, channels: int = 1, loss: str = "l1", delta_m_metrics=None):
        super().__init__(name, channels, delta_m_metrics)
        if loss not in ("l1", "l2"):
            raise TypeError(f"loss must be 'l1' or 'l2', got {loss!r}")
        self.channels = channels
        self.loss_type = loss

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        valid = ~torch.isnan(target)
        if not valid.any():
            return pred.sum() * 0.0
        fn = F.l1_loss if self.loss_type == "l1" else F.mse_loss
        return fn(pred[valid], target[valid])

    def metrics(self, **kwargs) -> RegressionMetrics:
        return RegressionMetrics(**kwargs)


class VectorRegressionTask(RegressionTask):
    """Image-level regression: `channels` numbers per image (Taskonomy's vanishing points: 3 unit vectors,
    9 numbers), predicted by a pooled head. Target (B, C) float, NaN = invalid. Loss and metrics as
    `regression`."""

    type = "vector"
    kind = "vector"
    dense = False
