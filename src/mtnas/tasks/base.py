"""A Task ties together what a head must output, how it is trained and how it is scored."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor

from mtnas.metrics.base import DenseMetric, Direction


class Task(ABC):
    """One prediction task. Subclasses set `type`, `main_metric` and default Δm metrics.

    `delta_m_metrics` are the metric names that count in Δm; each metric's direction comes from the
    metric class itself, so there is one place where "higher is better" is declared.
    """

    type: ClassVar[str]
    kind: ClassVar[str]  # the target's array convention (mtnas.data.files.KINDS)
    dense: ClassVar[bool] = True  # False: one prediction per image (the head pools over the image)
    main_metric: ClassVar[str]
    default_delta_m_metrics: ClassVar[tuple[str, ...]]

    def __init__(self, name: str, out_channels: int, delta_m_metrics: list[str] | None = None):
        self.name = name
        self.out_channels = out_channels
        self.delta_m_metrics = tuple(delta_m_metrics or self.default_delta_m_metrics)

    @abstractmethod
    def loss(self, pred: Tensor, target: Tensor) -> Tensor: ...

    @abstractmethod
    def metrics(self, **kwargs) -> DenseMetric:
        """A fresh metric; `kwargs` go to torchmetrics (e.g. `sync_on_compute=False` for per-process use)."""

    @property
    def directions(self) -> dict[str, Direction]:
        """Direction of every metric this task reports."""
        return dict(self.metrics().directions)

    @property
    def delta_m_directions(self) -> dict[str, Direction]:
        dirs = self.directions
        return {m: dirs[m] for m in self.delta_m_metrics}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, out_channels={self.out_channels})"
