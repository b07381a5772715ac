"""A Task ties together what a head must output, how it is trained and how it is scored."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import default_collate

from mtnas.metrics.base import DenseMetric, Direction


class Task(ABC):
    """One prediction task. Subclasses set `type`, `main_metric` and default Δm metrics.

    `delta_m_metrics` are the metric names that count in Δm; each metric's direction comes from the
    metric class itself, so there is one place where "higher is better" is declared.

    Three hooks let models and data stay ignorant of what a task predicts (DESIGN.md §3): `build_head`
    (the head a static multi-task net gives it), `reduce_target` (its target at a reduced training-loss
    resolution) and `collate` (a batch of its targets). The defaults serve dense and image-level tensors;
    a task with other targets (e.g. variable-length boxes) overrides them.
    """

    type: ClassVar[str]
    kind: ClassVar[str]  # the target's array convention (mtnas.data.files.KINDS)
    dense: ClassVar[bool] = True  # False: one prediction per image (the head pools over the image)
    prediction_stride: ClassVar[int] = 1  # the head predicts at 1/stride of the input size
    main_metric: ClassVar[str]
    default_delta_m_metrics: ClassVar[tuple[str, ...]]

    def __init__(self, name: str, out_channels: int, delta_m_metrics: list[str] | None = None):
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
            # build_task turns this into a ConfigError at data.available_tasks.<name>
            raise TypeError(
                f"its number of classes/channels must be a positive integer, got {out_channels!r}"
            )
        self.name = name
        self.out_channels = out_channels
        self.delta_m_metrics = tuple(delta_m_metrics or self.default_delta_m_metrics)

    @abstractmethod
    def loss(self, pred: Tensor, target: Tensor) -> Tensor: ...

    def build_head(self, in_channels: Sequence[int], hidden: int = 64, refine_layers: int = 1) -> nn.Module:
        """The head on multi-scale features (finest first): fused, refined, then this task's prediction;
        pooled over the image for image-level tasks."""
        from mtnas.nn.heads import MultiScaleHead

        head = MultiScaleHead(
            in_channels, self.out_channels, hidden, refine_layers, not self.dense, self.prediction_stride
        )
        self.init_head(head)
        return head

    def init_head(self, head: nn.Module) -> None:
        """Set a freshly built head's initial weights where the task needs it (its `predict` conv); any model
        that builds heads itself calls this too. Default: as built."""
        return None

    def reduce_target(self, target: Tensor, size: tuple[int, int]) -> Tensor:
        """The target at `size`, for training losses below the input resolution (`loss.stride`). Nearest
        sampling, so no values (nor invalid markers) are mixed; image-level targets are left as they are."""
        if not self.dense:
            return target
        return F.interpolate(target.float(), size=size, mode="nearest")

    def collate(self, targets: list[Any]) -> Tensor | list[Any]:
        """One batch entry from the samples' targets (stacked tensors by default)."""
        return default_collate(targets)

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
