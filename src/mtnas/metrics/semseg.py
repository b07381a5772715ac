"""Semantic segmentation: mean IoU and pixel accuracy from a summed confusion matrix."""

from __future__ import annotations

import torch
from torch import Tensor

from mtnas.metrics.base import DenseMetric


class SemsegMetrics(DenseMetric):
    """mIoU (mean over classes that occur in prediction or target) and pixel accuracy.

    `preds` are logits (B, C, H, W) or labels (B, H, W); `target` is (B, H, W) long with `ignore_index`.
    """

    directions = {"miou": "max", "pixel_acc": "max"}

    def __init__(self, num_classes: int, ignore_index: int = -1, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(dim=1)
        valid = target != self.ignore_index
        t = target[valid].long()
        p = preds[valid].long()
        idx = t * self.num_classes + p
        self.confmat += torch.bincount(idx, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def compute(self) -> dict[str, Tensor]:
        cm = self.confmat.double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        present = union > 0
        iou = tp[present] / union[present]
        miou = iou.mean() if present.any() else torch.tensor(0.0, dtype=torch.float64)
        total = cm.sum()
        acc = tp.sum() / total if total > 0 else torch.tensor(0.0, dtype=torch.float64)
        return {"miou": miou.float(), "pixel_acc": acc.float()}
