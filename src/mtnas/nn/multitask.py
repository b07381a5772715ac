"""Static multi-task network: one shared backbone (hard parameter sharing) + one head per task."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from mtnas.nn.backbone import TimmBackbone
from mtnas.nn.heads import MultiScaleHead


class MultiTaskNet(nn.Module):
    """`forward(images) -> dict[task, Tensor]`, every dense output at the input resolution (or
    `output_size`); image-level tasks give (B, C).

    `levels` picks which backbone feature levels feed the heads (finest first); stride-2 stems are
    usually left out, as they cost most and add little.
    """

    def __init__(self, backbone: TimmBackbone, heads: Mapping[str, nn.Module], levels: Sequence[int]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.levels = list(levels)

    def forward(self, images: Tensor, output_size: tuple[int, int] | None = None) -> dict[str, Tensor]:
        feats = self.backbone(images)
        feats = [feats[i] for i in self.levels]
        size = output_size or images.shape[-2:]
        return {name: head(feats, size) for name, head in self.heads.items()}


def build_multitask_net(
    model_cfg: Mapping[str, Any],
    out_channels: Mapping[str, int],
    image_size: tuple[int, int],
    image_level: Collection[str] = (),
) -> MultiTaskNet:
    """Build from the `model` config group: `backbone: {name, ...timm kwargs}`, `head: {hidden, ...}`,
    `min_reduction` (feature levels finer than this are not fed to the heads). Tasks in `image_level` get
    pooled heads (one prediction per image)."""
    bb_cfg = dict(model_cfg["backbone"])
    backbone = TimmBackbone(bb_cfg.pop("name"), image_size, **bb_cfg)
    min_red = int(model_cfg.get("min_reduction", 4))
    levels = [i for i, r in enumerate(backbone.reductions) if r >= min_red] or [len(backbone.reductions) - 1]
    in_ch = [backbone.channels[i] for i in levels]
    head_cfg = dict(model_cfg.get("head", {}))
    heads = {
        t: MultiScaleHead(in_ch, c, **head_cfg, pooled=t in image_level) for t, c in out_channels.items()
    }
    return MultiTaskNet(backbone, heads, levels)
