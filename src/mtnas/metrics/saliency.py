"""Saliency: max F-measure (β² = 0.3) and IoU, as reported on PASCAL-Context by the multi-task
literature (Vandenhende et al.; ATRC; InvPT; MQTransformer).

`maxf` follows the evaluation code of ATRC and InvPT: per threshold, true positives, predicted positives
and actual positives are summed over the whole split, precision and recall are taken of those pooled
counts, and the F-measure (β² = 0.3) is maximised over thresholds. (Averaging precision and recall per image
first gives clearly different values.) `miou` is the mean over images of the IoU of the map thresholded at
0.5. Pixels equal to `ignore_index` count for neither. All states are sums, so the result is exact under
DDP.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtnas.metrics.base import DenseMetric


class SaliencyMetrics(DenseMetric):
    directions = {"maxf": "max", "miou": "max"}

    def __init__(self, num_thresholds: int = 99, beta2: float = 0.3, ignore_index: int = 255, **kwargs):
        super().__init__(**kwargs)
        self.beta2 = beta2
        self.ignore_index = ignore_index
        self.register_buffer("thresholds", torch.linspace(0, 1, num_thresholds + 2)[1:-1], persistent=False)
        for name in ("true_positives", "predicted_positives", "actual_positives"):
            self.add_state(
                name, default=torch.zeros(num_thresholds, dtype=torch.float64), dist_reduce_fx="sum"
            )
        for name in ("iou_sum", "images"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """`preds` logits (B, 1, H, W); `target` (B, 1, H, W) with 1 = salient, 0 = not."""
        b = target.shape[0]
        valid = (target != self.ignore_index).reshape(b, 1, -1)
        gt = (target == 1).reshape(b, 1, -1) & valid
        prob = torch.sigmoid(preds.float()).reshape(b, 1, -1)
        pred = (prob > self.thresholds.to(prob.device).view(1, -1, 1)) & valid  # (B, K, N)
        self.true_positives += (pred & gt).sum((0, 2)).double()
        self.predicted_positives += pred.sum((0, 2)).double()
        self.actual_positives += gt.sum((0, 2)).double()
        half = (prob > 0.5) & valid
        inter = (half & gt).sum((1, 2)).double()
        union = (half | gt).sum((1, 2)).double()
        self.iou_sum += torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).sum()
        self.images += b

    def compute(self) -> dict[str, Tensor]:
        n = self.images.clamp_min(1)
        # No predicted (or actual) positive at a threshold: precision (recall) 0 there.
        p = self.true_positives / self.predicted_positives.clamp_min(1)
        r = self.true_positives / self.actual_positives.clamp_min(1)
        f = (1 + self.beta2) * p * r / (self.beta2 * p + r).clamp_min(1e-12)
        return {"maxf": f.max().float(), "miou": (self.iou_sum / n).float()}
