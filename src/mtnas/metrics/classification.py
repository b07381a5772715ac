"""Image-level classification against soft (distilled) or hard labels (Taskonomy's class_object/scene)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtnas.metrics.base import DenseMetric


class ClassificationMetrics(DenseMetric):
    """Top-1 / top-5 accuracy (%) against the target's most likely class, and the KL divergence (nats)
    from the target distribution to the predicted one. Targets: (B, C) distributions (rows summing to 1;
    an all-zero row = unlabeled, skipped) or (B,) class ids (−1 = unlabeled)."""

    directions = {"top1": "max", "top5": "max", "kl": "min"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("top1_sum", "top5_sum", "kl_sum", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        dist, valid = as_distribution(target, preds.shape[1])
        if not valid.any():
            return
        logits, dist = preds[valid].double(), dist[valid].double()
        label = dist.argmax(1)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        self.top1_sum += (top[:, 0] == label).sum()
        self.top5_sum += (top == label[:, None]).any(1).sum()
        log_q = torch.log_softmax(logits, 1)
        self.kl_sum += torch.where(dist > 0, dist * (dist.clamp_min(1e-30).log() - log_q), 0.0).sum()
        self.count += valid.sum()

    def compute(self) -> dict[str, Tensor]:
        n = self.count.clamp_min(1)
        return {
            "top1": (100 * self.top1_sum / n).float(),
            "top5": (100 * self.top5_sum / n).float(),
            "kl": (self.kl_sum / n).float(),
        }


def as_distribution(target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """(B, C) probabilities and a (B,) mask of labelled rows, from soft (B, C) or hard (B,) targets."""
    if target.ndim == 1:
        valid = target >= 0
        dist = torch.zeros(target.shape[0], num_classes, device=target.device)
        dist[valid] = torch.nn.functional.one_hot(target[valid].long(), num_classes).float()
        return dist, valid
    total = target.sum(1, keepdim=True)
    valid = total[:, 0] > 0
    return target / total.clamp_min(1e-12), valid
