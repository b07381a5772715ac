"""MQTransformer (Xu et al., "Multi-Task Learning with Multi-Query Transformer for Dense Prediction", 2022):
a hand-made multi-task decoder on any timm backbone, where each task keeps a small set of learnt queries and
the tasks exchange information through their queries rather than through their dense features.

    backbone levels → resized to stride 4, concatenated → per task a linear projection to `dim`
    per task `num_queries` learnt queries (+ learnt positions)
    shared encoder:    queries attend to their task's pixels (LayerNorm on q, k, v) → reasoning → MLP
    cross-task:        self-attention over all tasks' queries together → MLP
    shared decoder:    pixels attend to their task's queries → FFN → spatial self-attention → FFN
    per task head:     3×3 conv-BN-ReLU to `head_hidden` → 1×1 to the task's channels → upsample

Two departures from the authors' released code, both fixes: there the decoder's second attention is an
`nn.MultiheadAttention` fed (batch, pixels, channels) without `batch_first`, so it attends across the
images of a batch instead of across pixels, and its residual is added to the decoder's input rather than to
the output of the first attention (which is thereby dropped). Here the second attention is real spatial
self-attention over one image's pixels, with residuals on the running features.

Spatial attention at stride 4 is quadratic in the pixels (6,912 tokens at 288×384), so its keys and values
are average-pooled by `spatial_kv_stride` (default 2: keys at stride 8, 4× less attention compute and
memory) as in PVT's spatial-reduction attention, while every pixel still queries the whole image; attention
runs through `scaled_dot_product_attention` (flash / memory-efficient kernels on GPUs). `spatial_kv_stride=1`
gives full pixel-to-pixel attention.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtnas.errors import ConfigError
from mtnas.nn.backbone import TimmBackbone
from mtnas.nn.heads import conv_bn_relu
from mtnas.utils.checks import positive_int

if TYPE_CHECKING:
    from mtnas.tasks import Task


class NormedAttention(nn.Module):
    """Multi-head attention with LayerNorm on the query, key and value inputs (as MQTransformer's);
    inputs are (B, N, C), batch first: tokens attend only within their own image."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, n, c = q.shape
        heads = self.num_heads

        def split(x: Tensor) -> Tensor:
            return x.reshape(b, x.shape[1], heads, c // heads).transpose(1, 2)

        q = split(self.to_q(self.norm_q(q)))
        k = split(self.to_k(self.norm_k(k)))
        v = split(self.to_v(self.norm_v(v)))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Sequential):
    """Pre-norm MLP: LayerNorm → Linear → GELU → Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class QueryEncoder(nn.Module):
    """Queries gather their task's pixels; a light reasoning layer (a pre-norm linear map over the
    channels) and an MLP follow."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.attn = NormedAttention(dim, num_heads)
        self.reason = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim, bias=False))
        self.mlp = Mlp(dim, dim)

    def forward(self, queries: Tensor, query_pos: Tensor, pixels: Tensor) -> Tensor:
        queries = queries + self.attn(queries + query_pos, pixels, pixels)
        queries = queries + self.reason(queries)
        return queries + self.mlp(queries)


class CrossTaskQueryAttention(nn.Module):
    """Self-attention over every task's queries at once: how the tasks talk to each other."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.attn = NormedAttention(dim, num_heads)
        self.mlp = Mlp(dim, dim)

    def forward(self, queries: Tensor) -> Tensor:
        queries = queries + self.attn(queries, queries, queries)
        return queries + self.mlp(queries)


class QueryDecoder(nn.Module):
    """Pixels read their task's queries, then attend to the other pixels of their image (keys and values
    pooled by `kv_stride`)."""

    def __init__(self, dim: int, num_heads: int, ffn_ratio: int = 3, kv_stride: int = 2):
        super().__init__()
        self.kv_stride = kv_stride
        self.query_attn = NormedAttention(dim, num_heads)
        self.ffn1 = Mlp(dim, dim * ffn_ratio)
        self.spatial_attn = NormedAttention(dim, num_heads)
        self.ffn2 = Mlp(dim, dim * ffn_ratio)

    def forward(self, pixels: Tensor, size: tuple[int, int], queries: Tensor, key_pos: Tensor) -> Tensor:
        x = pixels + self.query_attn(pixels, queries + key_pos, queries)
        x = x + self.ffn1(x)
        kv = x
        if self.kv_stride > 1:
            b, _, c = x.shape
            grid = x.transpose(1, 2).reshape(b, c, *size)
            kv = F.avg_pool2d(grid, self.kv_stride, ceil_mode=True).flatten(2).transpose(1, 2)
        x = x + self.spatial_attn(x, kv, kv)
        return x + self.ffn2(x)


class MQTaskHead(nn.Module):
    """3×3 conv-BN-ReLU, 1×1 prediction, upsampled to the output size (÷ `stride`); `pooled` (image-level
    tasks) averages over the image before predicting."""

    def __init__(self, dim: int, hidden: int, out_channels: int, pooled: bool = False, stride: int = 1):
        super().__init__()
        self.pooled, self.stride = pooled, stride
        self.refine = conv_bn_relu(dim, hidden, 3)
        self.predict = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, x: Tensor, output_size: tuple[int, int]) -> Tensor:
        x = self.refine(x)
        if self.pooled:
            return self.predict(x.mean((2, 3), keepdim=True)).flatten(1)
        size = (output_size[0] // self.stride, output_size[1] // self.stride)
        return F.interpolate(self.predict(x), size=size, mode="bilinear", align_corners=False)


class MQTransformer(nn.Module):
    """`forward(images) -> dict[task, Tensor]`, like every multi-task model here."""

    def __init__(
        self,
        backbone: TimmBackbone,
        levels: list[int],
        heads: Mapping[str, MQTaskHead],
        dim: int = 256,
        num_queries: int = 64,
        num_heads: int = 4,
        ffn_ratio: int = 3,
        spatial_kv_stride: int = 2,
        fuse_stride: int = 4,
    ):
        super().__init__()
        self.backbone, self.levels, self.fuse_stride = backbone, list(levels), fuse_stride
        self.tasks = list(heads)
        fused = sum(backbone.channels[i] for i in self.levels)
        self.project = nn.ModuleDict({t: nn.Conv2d(fused, dim, 1) for t in self.tasks})
        self.queries = nn.ParameterDict({t: nn.Parameter(torch.zeros(num_queries, dim)) for t in self.tasks})
        self.query_pos = nn.ParameterDict(
            {t: nn.Parameter(torch.zeros(num_queries, dim)) for t in self.tasks}
        )
        self.key_pos = nn.ParameterDict({t: nn.Parameter(torch.zeros(num_queries, dim)) for t in self.tasks})
        for p in (*self.queries.values(), *self.query_pos.values(), *self.key_pos.values()):
            nn.init.trunc_normal_(p, std=0.02)
        self.encoder = QueryEncoder(dim, num_heads)
        self.cross_task = CrossTaskQueryAttention(dim, num_heads)
        self.decoder = QueryDecoder(dim, num_heads, ffn_ratio, spatial_kv_stride)
        self.heads = nn.ModuleDict(heads)

    def fused_features(self, images: Tensor) -> Tensor:
        """Every chosen backbone level resized to 1/`fuse_stride` of the input and concatenated."""
        feats = self.backbone(images)
        h, w = images.shape[-2:]
        size = (max(1, h // self.fuse_stride), max(1, w // self.fuse_stride))
        return torch.cat(
            [F.interpolate(feats[i], size=size, mode="bilinear", align_corners=False) for i in self.levels], 1
        )

    def forward(self, images: Tensor, output_size: tuple[int, int] | None = None) -> dict[str, Tensor]:
        fused = self.fused_features(images)
        b, _, h, w = fused.shape
        pixels = {t: self.project[t](fused).flatten(2).transpose(1, 2) for t in self.tasks}  # (B, hw, dim)
        # Per-image copies (`repeat`, not `expand`): a view of a parameter made under no_grad cannot be hooked
        # by torch's flop counter.
        queries = {
            t: self.encoder(self.queries[t].repeat(b, 1, 1), self.query_pos[t].repeat(b, 1, 1), pixels[t])
            for t in self.tasks
        }
        n = [queries[t].shape[1] for t in self.tasks]
        mixed = dict(
            zip(self.tasks, self.cross_task(torch.cat(list(queries.values()), 1)).split(n, 1), strict=True)
        )
        size = output_size or tuple(images.shape[-2:])
        out = {}
        for t in self.tasks:
            x = self.decoder(pixels[t], (h, w), mixed[t], self.key_pos[t].repeat(b, 1, 1))
            x = F.gelu(x).transpose(1, 2).reshape(b, -1, h, w)
            out[t] = self.heads[t](x, size)
        return out


def build_mqtransformer(
    backbone: Mapping[str, Any],
    tasks: Mapping[str, Task],
    image_size: tuple[int, int],
    dim: int = 256,
    num_queries: int = 64,
    num_heads: int = 4,
    ffn_ratio: int = 3,
    spatial_kv_stride: int = 2,
    head_hidden: int = 64,
    min_reduction: int = 4,
) -> MQTransformer:
    """The model spec target of `conf/model/mqtransformer.yaml` (`backbone: {name, ...timm kwargs}`; the
    backbone levels of stride ≥ `min_reduction` are fused at stride 4)."""
    for key, value in (
        ("dim", dim),
        ("num_queries", num_queries),
        ("num_heads", num_heads),
        ("ffn_ratio", ffn_ratio),
        ("spatial_kv_stride", spatial_kv_stride),
        ("head_hidden", head_hidden),
        ("min_reduction", min_reduction),
    ):
        positive_int(f"model.{key}", value)
    if dim % num_heads:
        raise ConfigError("model.num_heads", f"is {num_heads}, which does not divide model.dim ({dim}).")
    bb_cfg = dict(backbone)
    body = TimmBackbone(bb_cfg.pop("name"), image_size, **bb_cfg)
    levels = [i for i, r in enumerate(body.reductions) if r >= int(min_reduction)] or [
        len(body.reductions) - 1
    ]
    heads = {}
    for t, task in tasks.items():
        heads[t] = MQTaskHead(dim, head_hidden, task.out_channels, not task.dense, task.prediction_stride)
        task.init_head(heads[t])
    return MQTransformer(body, levels, heads, dim, num_queries, num_heads, ffn_ratio, spatial_kv_stride)
