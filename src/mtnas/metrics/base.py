"""Shared base for metrics that report several named values."""

from __future__ import annotations

from typing import ClassVar, Literal

from torchmetrics import Metric

Direction = Literal["max", "min"]


class DenseMetric(Metric):
    """A `Metric` whose `compute()` returns `dict[name, Tensor]`.

    `directions` says for every reported name whether higher ("max") or lower ("min") is better;
    Δm and checkpoint selection read it, so it is declared once, here, next to the computation.
    """

    directions: ClassVar[dict[str, Direction]] = {}
    full_state_update = False
