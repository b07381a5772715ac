from __future__ import annotations

import torch
from torch import Tensor

from mtnas.metrics.classification import ClassificationMetrics, as_distribution
from mtnas.tasks.base import Task


class ClassificationTask(Task):
    """Image-level classification: one prediction per image (the head's features pooled over the image),
    trained with cross-entropy against soft targets (Taskonomy's class_object / class_scene are
    distributions distilled from ImageNet / Places classifiers) or hard class ids.
    Target (B, C) float distribution (all-zero row = unlabeled) or (B,) long (−1 = unlabeled)."""

    type = "classification"
    kind = "distribution"
    dense = False
    main_metric = "top1"
    default_delta_m_metrics = ("top1",)

    def __init__(self, name: str, num_classes: int, classes: list[int] | None = None, delta_m_metrics=None):
        # `classes` (a subset of the file's class indices) is read by the data reader; the head predicts
        # only those, so num_classes == len(classes) then.
        if classes is not None and len(classes) != num_classes:
            raise TypeError(f"num_classes is {num_classes} but `classes` lists {len(classes)} indices")
        super().__init__(name, num_classes, delta_m_metrics)
        self.num_classes = num_classes

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        dist, valid = as_distribution(target, pred.shape[1])
        if not valid.any():
            return pred.sum() * 0.0
        log_q = torch.log_softmax(pred[valid].float(), 1)
        return -(dist[valid] * log_q).sum(1).mean()

    def metrics(self, **kwargs) -> ClassificationMetrics:
        return ClassificationMetrics(**kwargs)
