"""A light multi-scale dense head (FPN-style fusion) shared by every task type."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def fuse_levels(lateral: Sequence[nn.Module], features: Sequence[Tensor], size) -> Tensor:
    """Each feature level through its lateral module, resized (bilinear) to `size`, summed."""
    fused = None
    for lat, f in zip(lateral, features, strict=True):
        y = lat(f)
        if y.shape[-2:] != size:
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        fused = y if fused is None else fused + y
    return fused


class MultiScaleHead(nn.Module):
    """Project each feature level to `hidden` channels, upsample to the finest one, sum, refine, predict.

    Predicting at the finest feature stride and upsampling the logits (rather than the features) keeps
    the head cheap: full-resolution work is one bilinear resize of `out_channels` maps. `pooled=True`
    (image-level tasks) averages the refined features over the image and predicts (B, out_channels).
    `stride` > 1 predicts at that fraction of the output size (detection's stride-4 maps).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        hidden: int = 64,
        refine_layers: int = 1,
        pooled: bool = False,
        stride: int = 1,
    ):
        super().__init__()
        self.pooled, self.stride = pooled, stride
        self.lateral = nn.ModuleList(conv_bn_relu(c, hidden, 1) for c in in_channels)
        self.refine = nn.Sequential(*[conv_bn_relu(hidden, hidden, 3) for _ in range(refine_layers)])
        self.predict = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, features: Sequence[Tensor], output_size: tuple[int, int]) -> Tensor:
        refined = self.refine(fuse_levels(self.lateral, features, features[0].shape[-2:]))
        if self.pooled:
            return self.predict(refined.mean((2, 3), keepdim=True)).flatten(1)
        size = (output_size[0] // self.stride, output_size[1] // self.stride)
        return F.interpolate(self.predict(refined), size=size, mode="bilinear", align_corners=False)
