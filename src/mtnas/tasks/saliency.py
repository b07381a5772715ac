from __future__ import annotations

from torch import Tensor

from mtnas.metrics import SaliencyMetrics
from mtnas.tasks.base import Task
from mtnas.tasks.edge import balanced_bce, reduce_binary


class SaliencyTask(Task):
    """Binary saliency. Target (B, 1, H, W): 1 = salient, 0 = not, `ignore_index` = unlabeled.
    Loss: class-balanced BCE, each class weighted by the other's frequency in the batch (as for edges)."""

    type = "saliency"
    kind = "binary"
    main_metric = "maxf"
    default_delta_m_metrics = ("maxf",)

    def __init__(self, name: str, ignore_index: int = 255, delta_m_metrics=None):
        super().__init__(name, 1, delta_m_metrics)
        self.ignore_index = ignore_index

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return balanced_bce(pred, target, self.ignore_index)

    def reduce_target(self, target: Tensor, size: tuple[int, int]) -> Tensor:
        return reduce_binary(target, size)

    def metrics(self, **kwargs) -> SaliencyMetrics:
        return SaliencyMetrics(ignore_index=self.ignore_index, **kwargs)
