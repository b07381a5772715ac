from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mtnas.metrics import BoundaryFScore
from mtnas.tasks.base import Task


def balanced_bce(pred: Tensor, target: Tensor, ignore_index: int, pos_weight: float | None = None) -> Tensor:
    """BCE on logits where each class is weighted by the other's frequency among valid pixels (or by a fixed
    `pos_weight` for the positive class), normalised so the scale does not depend on the positive share."""
    valid = target != ignore_index
    if not valid.any():
        return pred.sum() * 0.0
    t = (target == 1).float()
    if pos_weight is None:
        pos_frac = t[valid].mean().clamp(0.01, 0.99)
        w_pos, w_neg = 1.0 - pos_frac, pos_frac
    else:
        w_pos, w_neg = pos_weight, 1.0 - pos_weight
    weight = (t * w_pos + (1 - t) * w_neg) * valid
    return F.binary_cross_entropy_with_logits(pred, t, weight=weight, reduction="sum") / weight.sum()


def reduce_binary(target: Tensor, size: tuple[int, int]) -> Tensor:
    """A thin binary map at `size`: max-pooled positives (an edge anywhere in a cell survives), else the
    nearest value (0, or the ignore label)."""
    near = F.interpolate(target.float(), size=size, mode="nearest")
    pos = F.adaptive_max_pool2d((target == 1).float(), size)
    return torch.where(pos > 0, torch.ones_like(near), near)


class EdgeTask(Task):
    """Binary boundaries. Target (B, 1, H, W) with 1 = edge, 0 = not, `ignore_index` = unlabeled.

    Loss: class-balanced BCE (HED): edges are rare, so each class is weighted by the other's frequency
    in the batch unless a fixed `pos_weight` (weight of the edge class, in (0, 1)) is given."""

    type = "edge"
    kind = "binary"
    main_metric = "odsf"
    default_delta_m_metrics = ("odsf",)

    def __init__(
        self,
        name: str,
        pos_weight: float | None = None,
        max_dist: float = 0.0075,
        ignore_index: int = 255,
        delta_m_metrics=None,
    ):
        super().__init__(name, 1, delta_m_metrics)
        if pos_weight is not None and not 0 < pos_weight < 1:
            raise TypeError(f"pos_weight must lie in (0, 1), got {pos_weight!r}")
        if not 0 < max_dist < 1:
            raise TypeError(
                f"max_dist (a fraction of the image diagonal) must lie in (0, 1), got {max_dist!r}"
            )
        self.pos_weight = pos_weight
        self.max_dist = max_dist
        self.ignore_index = ignore_index

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return balanced_bce(pred, target, self.ignore_index, self.pos_weight)

    def reduce_target(self, target: Tensor, size: tuple[int, int]) -> Tensor:
        return reduce_binary(target, size)

    def metrics(self, **kwargs) -> BoundaryFScore:
        return BoundaryFScore(max_dist=self.max_dist, ignore_index=self.ignore_index, **kwargs)
