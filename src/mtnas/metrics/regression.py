"""Generic dense regression (Taskonomy's keypoints, curvature, reshading, texture edges, …)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtnas.metrics.base import DenseMetric


class RegressionMetrics(DenseMetric):
    """Mean absolute error and RMSE over every valid (non-NaN) target value of the set, all channels."""

    directions = {"abs_err": "min", "rmse": "min"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("abs_sum", "sq_sum", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        valid = ~torch.isnan(target)
        diff = (preds[valid].double() - target[valid].double()).abs()
        self.abs_sum += diff.sum()
        self.sq_sum += (diff**2).sum()
        self.count += valid.sum()

    def compute(self) -> dict[str, Tensor]:
        n = self.count.clamp_min(1)
        return {"abs_err": (self.abs_sum / n).float(), "rmse": (self.sq_sum / n).sqrt().float()}
