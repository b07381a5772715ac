"""Any timm model as a multi-scale feature extractor.

timm's `features_only=True` covers CNNs (hooked stages), ViTs (via `forward_intermediates`, NCHW maps at
the patch stride) and Swin-style hierarchical transformers (whose stages give channels-last maps, permuted
here), so one wrapper serves them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
from torch import Tensor, nn

from mtnas.errors import ConfigError


class TimmBackbone(nn.Module):
    def __init__(
        self,
        name: str,
        image_size: tuple[int, int],
        out_indices: Sequence[int] | None = None,
        checkpoint: str | None = None,
        **kwargs,
    ):
        super().__init__()
        if name not in timm.list_models():
            raise ConfigError(
                "model.backbone.name", f"{name!r} is not a timm model name (see timm.list_models())."
            )
        create_kwargs = dict(kwargs)
        if _is_vit_like(name):
            create_kwargs.setdefault("img_size", tuple(image_size))
        if out_indices is not None:
            create_kwargs["out_indices"] = tuple(out_indices)
        if checkpoint:
            # Local weights only: nothing is downloaded at run time.
            if not Path(checkpoint).expanduser().is_file():
                raise ConfigError("model.backbone.checkpoint", f"weights file {checkpoint} does not exist.")
            create_kwargs.update(
                pretrained=True, pretrained_cfg_overlay={"file": str(Path(checkpoint).expanduser())}
            )
        try:
            self.body = timm.create_model(name, features_only=True, **create_kwargs)
        except (TypeError, RuntimeError, ValueError) as e:
            raise ConfigError(
                "model.backbone", f"timm could not build {name!r} as a feature extractor: {e}"
            ) from None
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.reductions: list[int] = list(self.body.feature_info.reduction())
        self.channels_last = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = list(self.body(x))
        if self.channels_last:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        return feats


def _is_vit_like(name: str) -> bool:
    """ViT-family models fix their input size at construction (position embeddings, Swin's windows)."""
    return any(k in name for k in ("vit", "deit", "beit", "eva", "swin"))
