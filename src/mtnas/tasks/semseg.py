from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mtnas.metrics import SemsegMetrics
from mtnas.tasks.base import Task


class SemsegTask(Task):
    """Per-pixel classification. Target (B, H, W) long; `ignore_index` marks unlabeled pixels."""

    type = "semseg"
    kind = "semseg"
    main_metric = "miou"
    default_delta_m_metrics = ("miou", "pixel_acc")

    def __init__(self, name: str, num_classes: int, ignore_index: int = -1, delta_m_metrics=None):
        super().__init__(name, num_classes, delta_m_metrics)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        if not (target != self.ignore_index).any():
            return pred.sum() * 0.0  # an all-ignored batch contributes nothing (CE would be NaN)
        return F.cross_entropy(pred, target, ignore_index=self.ignore_index)

    def reduce_target(self, target: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()

    def metrics(self, **kwargs) -> SemsegMetrics:
        return SemsegMetrics(self.num_classes, self.ignore_index, **kwargs)
