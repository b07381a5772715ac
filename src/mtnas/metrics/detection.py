"""Object detection: COCO-style mean average precision of CenterNet-style maps.

The head's raw maps (B, C + 4, h, w) are decoded to boxes here (`decode_centers`) and scored by torchmetrics'
`MeanAveragePrecision` (pycocotools backend, the reference COCO evaluation): `map` is mAP@[.5:.95], `map_50`
mAP at IoU 0.5, `map_75` at 0.75. Boxes are in the batch convention (normalised to the image); IoU does not
change when both axes are scaled, so the APs equal those of pixel boxes. (COCO's small/medium/large split is
by pixel area, so it is not reported.) Under DDP, torchmetrics gathers the boxes of every process.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert

from mtnas.metrics.base import DenseMetric


def decode_centers(maps: Tensor, num_classes: int, max_detections: int = 100) -> list[dict[str, Tensor]]:
    """Boxes from CenterNet maps: channels [0, C) class-centre logits, then box width and height and the
    centre's sub-cell offset (x, y), in cells of the map. A detection is a local maximum of a class heatmap
    (3×3 max-pool instead of NMS), at most `max_detections` per image, best first. Returns per image
    `{boxes (K, 4) xyxy normalised to [0, 1], scores (K,), labels (K,)}`."""
    b, _, h, w = maps.shape
    heat = torch.sigmoid(maps[:, :num_classes].float())
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    k = min(max_detections, num_classes * h * w)
    scores, index = peaks.flatten(1).topk(k)
    labels, cell = index // (h * w), index % (h * w)
    ys, xs = (cell // w).float(), (cell % w).float()
    boxmaps = maps[:, num_classes : num_classes + 4].float().flatten(2)  # (B, 4, h·w)
    size_offset = boxmaps.gather(2, cell[:, None].expand(-1, 4, -1))  # (B, 4, K)
    cx, cy = xs + 0.5 + size_offset[:, 2], ys + 0.5 + size_offset[:, 3]
    bw, bh = size_offset[:, 0].clamp_min(0), size_offset[:, 1].clamp_min(0)
    boxes = box_convert(torch.stack([cx, cy, bw, bh], -1), "cxcywh", "xyxy")
    boxes = (boxes / boxes.new_tensor([w, h, w, h])).clamp(0, 1)
    keep = scores > 0  # a non-peak cell is not a detection
    return [
        {"boxes": boxes[i][keep[i]], "scores": scores[i][keep[i]], "labels": labels[i][keep[i]]}
        for i in range(b)
    ]


class DetectionMetrics(DenseMetric):
    """mAP of decoded detections against `[{boxes (N, 4) xyxy normalised, labels (N,)}]` per image."""

    directions = {"map": "max", "map_50": "max", "map_75": "max"}

    def __init__(self, num_classes: int, max_detections: int = 100, **kwargs: Any):
        super().__init__(**kwargs)
        from torchmetrics.detection import MeanAveragePrecision

        self.num_classes, self.max_detections = num_classes, max_detections
        self.average_precision = MeanAveragePrecision(
            box_format="xyxy",
            iou_type="bbox",
            max_detection_thresholds=[1, 10, max_detections],
            backend="pycocotools",
            **kwargs,
        )

    def update(self, preds: Tensor, target: list[dict[str, Tensor]]) -> None:
        detections = decode_centers(preds, self.num_classes, self.max_detections)
        truth = [{"boxes": t["boxes"].float(), "labels": t["labels"]} for t in target]
        self.average_precision.update(detections, truth)

    def compute(self) -> dict[str, Tensor]:
        result = self.average_precision.compute()
        # pycocotools reports −1 where there is nothing to score (no ground-truth box at all): that is 0 here.
        return {name: result[name].float().clamp_min(0) for name in self.directions}

    def reset(self) -> None:
        super().reset()
        self.average_precision.reset()
