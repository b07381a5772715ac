"""Depth: absolute / relative error, RMSE and δ<1.25, over valid pixels (target > 0) of the whole set."""

from __future__ import annotations

import torch
from torch import Tensor

from mtnas.metrics.base import DenseMetric


class DepthMetrics(DenseMetric):
    """Per-pixel averages over every valid pixel seen (the convention of the MTL literature)."""

    directions = {"abs_err": "min", "rel_err": "min", "rmse": "min", "delta1": "max"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("abs_sum", "rel_sum", "sq_sum", "delta1_count", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        valid = target > 0
        p = preds[valid].double()
        t = target[valid].double()
        diff = (p - t).abs()
        self.abs_sum += diff.sum()
        self.rel_sum += (diff / t).sum()
        self.sq_sum += (diff**2).sum()
        # A non-positive prediction is never within a ratio of the target.
        p_pos = p.clamp_min(1e-6)
        ratio = torch.maximum(p_pos / t, t / p_pos)
        self.delta1_count += ((ratio < 1.25) & (p > 0)).sum()
        self.count += valid.sum()

    def compute(self) -> dict[str, Tensor]:
        n = self.count.clamp_min(1)
        return {
            "abs_err": (self.abs_sum / n).float(),
            "rel_err": (self.rel_sum / n).float(),
            "rmse": (self.sq_sum / n).sqrt().float(),
            "delta1": (self.delta1_count / n).float(),
        }
