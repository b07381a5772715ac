"""Surface normals: mean / median angular error and % of pixels within 11.25°, 22.5°, 30°."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mtnas.metrics.base import DenseMetric


class NormalMetrics(DenseMetric):
    """Angles are accumulated in a fine histogram (a sum state), so the median syncs under DDP in
    O(bins) memory instead of gathering every pixel; it is exact to within `bin_deg` (0.01° default)."""

    directions = {
        "mean": "min",
        "median": "min",
        "within_11_25": "max",
        "within_22_5": "max",
        "within_30": "max",
    }

    def __init__(self, bin_deg: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.bin_deg = bin_deg
        self.num_bins = int(round(180.0 / bin_deg))
        self.add_state("hist", default=torch.zeros(self.num_bins, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("angle_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("within_11_25", "within_22_5", "within_30"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        valid = target.norm(dim=1) > 0.5  # invalid pixels are stored as zero vectors
        p = F.normalize(preds.double(), dim=1).permute(0, 2, 3, 1)[valid]
        t = F.normalize(target.double(), dim=1).permute(0, 2, 3, 1)[valid]
        angle = torch.rad2deg(torch.acos((p * t).sum(-1).clamp(-1.0, 1.0)))
        self.angle_sum += angle.sum()
        self.within_11_25 += (angle < 11.25).sum()
        self.within_22_5 += (angle < 22.5).sum()
        self.within_30 += (angle < 30).sum()
        idx = (angle / self.bin_deg).long().clamp(0, self.num_bins - 1)
        self.hist += torch.bincount(idx, minlength=self.num_bins)

    def compute(self) -> dict[str, Tensor]:
        n = self.hist.sum()
        if n == 0:
            zero = torch.tensor(0.0)
            return {k: zero for k in self.directions}
        cdf = self.hist.cumsum(0)
        half = n.double() / 2
        k = int(torch.searchsorted(cdf.double(), half))
        below = cdf[k - 1].double() if k > 0 else torch.tensor(0.0, dtype=torch.float64)
        # Linear interpolation inside the bin that holds the middle pixel.
        frac = (half - below) / self.hist[k].double().clamp_min(1)
        median = (k + frac) * self.bin_deg
        nf = n.double()
        return {
            "mean": (self.angle_sum / nf).float(),
            "median": median.float(),
            "within_11_25": (100 * self.within_11_25 / nf).float(),
            "within_22_5": (100 * self.within_22_5 / nf).float(),
            "within_30": (100 * self.within_30 / nf).float(),
        }
