"""Object detection as one more head of a dense multi-task network, CenterNet-style (Zhou et al., "Objects as
Points", 2019).

Why CenterNet rather than FCOS or an anchor-based head: its output is one dense map at a single stride —
per class a heatmap of object centres, plus box size and sub-cell offset — so it is built, shared, searched,
costed and exported exactly like the other dense heads (a `MultiScaleHead` with C + 4 output channels at
stride 4), and decoding is a 3×3 max-pool instead of NMS, which keeps the exported graph plain.

Losses: the penalty-reduced focal loss of CenterNet on the heatmaps (targets are Gaussians around each
centre, σ = box size / 6 per axis, as TTFNet; torchvision's `sigmoid_focal_loss` has no such reduction for
soft targets, so it is written here), and L1 on size (weight 0.1, in cells) and offset at each object's
centre cell. Targets: per image `{boxes (N, 4) xyxy normalised to [0, 1], labels (N,)}`; since they are
normalised, the maps may have any resolution (`loss.stride` needs no target reduction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtnas.metrics.detection import DetectionMetrics
from mtnas.tasks.base import Task

_PRIOR = 0.1  # initial centre probability: heatmap logits start at log(0.1/0.9), as in CenterNet


class DetectionTask(Task):
    type = "detection"
    kind = "boxes"
    prediction_stride = 4
    main_metric = "map_50"
    default_delta_m_metrics = ("map_50",)

    def __init__(
        self,
        name: str,
        num_classes: int,
        size_weight: float = 0.1,
        offset_weight: float = 1.0,
        max_detections: int = 100,
        delta_m_metrics=None,
    ):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise TypeError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not isinstance(max_detections, int) or max_detections < 10:
            raise TypeError(f"max_detections must be an integer ≥ 10, got {max_detections!r}")
        super().__init__(name, num_classes + 4, delta_m_metrics)  # heatmaps, then w, h, offset x, y
        self.num_classes = num_classes
        self.size_weight, self.offset_weight = float(size_weight), float(offset_weight)
        self.max_detections = max_detections

    def init_head(self, head: nn.Module) -> None:
        with torch.no_grad():
            head.predict.bias[: self.num_classes].fill_(math.log(_PRIOR / (1 - _PRIOR)))

    def collate(self, targets: list[Any]) -> list[dict[str, Tensor]]:
        return list(targets)  # a different number of boxes per image

    def reduce_target(
        self, target: list[dict[str, Tensor]], size: tuple[int, int]
    ) -> list[dict[str, Tensor]]:
        return target  # normalised boxes fit any map resolution

    def targets(self, target: Sequence[dict[str, Tensor]], size: tuple[int, int]) -> dict[str, Tensor]:
        """The training targets on an (h, w) map: Gaussian heatmaps (B, C, h, w), and per object its image,
        centre cell (y, x), size (w, h) and offset (x, y) in cells."""
        h, w = size
        device = target[0]["boxes"].device if target else torch.device("cpu")
        heat = torch.zeros(len(target), self.num_classes, h, w, device=device)
        ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] + 0.5
        xs = torch.arange(w, device=device, dtype=torch.float32)[None] + 0.5
        none, no_pairs = torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, 2, device=device)
        objects = {
            "image": [none],
            "cell_y": [none],
            "cell_x": [none],
            "size": [no_pairs],
            "offset": [no_pairs],
        }
        for i, t in enumerate(target):
            boxes = t["boxes"].float() * torch.tensor([w, h, w, h], device=device)
            if not len(boxes):
                continue
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2
            extent = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-3)
            cell = centre.floor().clamp_min(0).minimum(torch.tensor([w - 1, h - 1], device=device))
            sigma = (extent / 6).clamp_min(0.5)
            gauss = torch.exp(
                -((xs - centre[:, 0, None, None]) ** 2) / (2 * sigma[:, 0, None, None] ** 2)
                - ((ys - centre[:, 1, None, None]) ** 2) / (2 * sigma[:, 1, None, None] ** 2)
            )
            cx, cy = cell[:, 0].long(), cell[:, 1].long()
            gauss[torch.arange(len(boxes)), cy, cx] = 1.0  # the centre cell is the positive
            index = t["labels"].to(device)[:, None, None].expand(-1, h, w)
            heat[i].scatter_reduce_(0, index, gauss, "amax")  # overlapping objects of a class: the max
            objects["image"].append(torch.full_like(cx, i))
            objects["cell_y"].append(cy)
            objects["cell_x"].append(cx)
            objects["size"].append(extent)
            objects["offset"].append(centre - cell - 0.5)
        return {"heatmap": heat, **{k: torch.cat(v) for k, v in objects.items()}}

    def loss(self, pred: Tensor, target: list[dict[str, Tensor]]) -> Tensor:
        c = self.num_classes
        t = self.targets(target, tuple(pred.shape[-2:]))
        logits = pred[:, :c].float()
        positive = t["heatmap"] == 1
        # Penalty-reduced focal loss (α = 2, β = 4); log-sigmoids for stability.
        p = torch.sigmoid(logits)
        pos = -(F.logsigmoid(logits) * (1 - p) ** 2)[positive].sum()
        neg = -(F.logsigmoid(-logits) * p**2 * (1 - t["heatmap"]) ** 4)[~positive].sum()
        n = max(int(positive.sum()), 1)
        loss = (pos + neg) / n
        if len(t["image"]):
            at = pred[t["image"], c:, t["cell_y"], t["cell_x"]].float()  # (N, 4) at the centre cells
            loss = loss + self.size_weight * F.l1_loss(at[:, :2], t["size"], reduction="sum") / n
            loss = loss + self.offset_weight * F.l1_loss(at[:, 2:], t["offset"], reduction="sum") / n
        return loss

    def metrics(self, **kwargs) -> DetectionMetrics:
        return DetectionMetrics(self.num_classes, self.max_detections, **kwargs)
