"""Static multi-task network: one shared backbone (hard parameter sharing) + one head per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from mtnas.nn.backbone import TimmBackbone
from mtnas.utils.checks import positive_int

if TYPE_CHECKING:
    from mtnas.tasks import Task


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
    backbone: Mapping[str, Any],
    tasks: Mapping[str, Task],
    image_size: tuple[int, int],
    head: Mapping[str, Any] | None = None,
    min_reduction: int = 4,
) -> MultiTaskNet:
    """The model spec target of `conf/model/*.yaml`: `backbone: {name, ...timm kwargs}`, `head: {hidden, ...}`
    (each task builds its own head: `Task.build_head`), `min_reduction` (feature levels finer than this are
    not fed to the heads)."""
    head = dict(head or {})
    positive_int("model.min_reduction", min_reduction)
    positive_int("model.head.hidden", head.get("hidden", 64))
    positive_int("model.head.refine_layers", head.get("refine_layers", 1), minimum=0)
    bb_cfg = dict(backbone)
    body = TimmBackbone(bb_cfg.pop("name"), image_size, **bb_cfg)
    levels = [i for i, r in enumerate(body.reductions) if r >= int(min_reduction)] or [
        len(body.reductions) - 1
    ]
    in_ch = [body.channels[i] for i in levels]
    heads = {t: task.build_head(in_ch, **head) for t, task in tasks.items()}
    return MultiTaskNet(body, heads, levels)
