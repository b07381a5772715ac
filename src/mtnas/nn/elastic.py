"""Elastic transformer layers: one set of max-size weights, any smaller width used through leading slices
(AutoFormer's weight entanglement). The same classes, built at exact size, are the extracted static layers,
so a subnet and its extraction run literally the same code.

qkv follows timm's row layout: `qkv.weight` is (3·H·hd, D) with rows [q | k | v], each block holding H
heads of `hd` rows. A subnet with h heads and width d uses rows [j·H·hd, j·H·hd + h·hd) of each block j
and the first d columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LN_EPS = 1e-6  # timm ViT's LayerNorm eps


def layer_norm(x: Tensor, norm: nn.LayerNorm, dim: int) -> Tensor:
    return F.layer_norm(x, (dim,), norm.weight[:dim], norm.bias[:dim], LN_EPS)


def block_forward(
    x: Tensor,
    norm1_w: Tensor,
    norm1_b: Tensor,
    qkv_w: Tensor,
    qkv_b: Tensor | None,
    proj_w: Tensor,
    proj_b: Tensor,
    norm2_w: Tensor,
    norm2_b: Tensor,
    fc1_w: Tensor,
    fc1_b: Tensor,
    fc2_w: Tensor,
    fc2_b: Tensor,
    dim: int,
    heads: int,
    hidden: int,
    head_dim: int,
) -> Tensor:
    """One pre-norm ViT block on the leading (dim, heads, hidden) slice of max-size weights.

    A free function of full weights and plain ints, so one `torch.compile` of it serves every block of
    every supernet: Dynamo specialises on the ints and the input shape, giving one compiled variant per
    block shape (a few dozen per space), each with the slicing fused into its kernels."""
    b, n, _ = x.shape
    inner = heads * head_dim
    max_inner = qkv_w.shape[0] // 3
    h = F.layer_norm(x, (dim,), norm1_w[:dim], norm1_b[:dim], LN_EPS)
    w = qkv_w.view(3, max_inner, -1)[:, :inner, :dim].reshape(3 * inner, dim)
    bias = qkv_b.view(3, max_inner)[:, :inner].reshape(-1) if qkv_b is not None else None
    qkv = F.linear(h, w, bias).reshape(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    a = a.transpose(1, 2).reshape(b, n, inner)
    x = x + F.linear(a, proj_w[:dim, :inner], proj_b[:dim])
    h = F.layer_norm(x, (dim,), norm2_w[:dim], norm2_b[:dim], LN_EPS)
    h = F.gelu(F.linear(h, fc1_w[:hidden, :dim], fc1_b[:hidden]))
    return x + F.linear(h, fc2_w[:dim, :hidden], fc2_b[:dim])


_compiled_block = block_forward  # replaced by `compile_blocks()`


def compile_blocks(backend: str = "inductor", mode: str | None = None, max_variants: int = 256) -> None:
    """Route every ElasticBlock with `compiled = True` through one compiled `block_forward`.

    `dynamic=False`: each block shape gets its own static-shape variant (fast kernels), compiled on first
    use and cached; Dynamo's recompile limit is raised to `max_variants` so that sampling a new arch each
    step never falls back to eager. Compiling the whole supernet instead retraces the routing for every
    sampled arch and never stops recompiling."""
    global _compiled_block
    import torch._dynamo

    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), max_variants))
    if hasattr(cfg, "accumulated_recompile_limit"):
        cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 4 * max_variants)
    elif hasattr(cfg, "accumulated_cache_size_limit"):
        cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 4 * max_variants)
    _compiled_block = torch.compile(block_forward, backend=backend, mode=mode, dynamic=False)


class ElasticBlock(nn.Module):
    """A pre-norm ViT block (timm `Block` layout: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)."""

    compiled = False  # set True (per instance or class) after `compile_blocks()` to use compiled variants

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_hidden: int, qkv_bias: bool = True):
        super().__init__()
        self.max_dim, self.max_heads, self.head_dim, self.max_hidden = dim, num_heads, head_dim, mlp_hidden
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(num_heads * head_dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.fc1 = nn.Linear(dim, mlp_hidden)
        self.fc2 = nn.Linear(mlp_hidden, dim)

    def qkv_slice(self, dim: int, heads: int) -> tuple[Tensor, Tensor | None]:
        inner = heads * self.head_dim
        w = self.qkv.weight.view(3, self.max_heads * self.head_dim, self.max_dim)[:, :inner, :dim]
        b = None
        if self.qkv.bias is not None:
            b = self.qkv.bias.view(3, -1)[:, :inner].reshape(-1)
        return w.reshape(3 * inner, dim), b

    def forward(
        self, x: Tensor, dim: int | None = None, heads: int | None = None, hidden: int | None = None
    ) -> Tensor:
        impl = _compiled_block if self.compiled else block_forward
        return impl(
            x,
            self.norm1.weight,
            self.norm1.bias,
            self.qkv.weight,
            self.qkv.bias,
            self.proj.weight,
            self.proj.bias,
            self.norm2.weight,
            self.norm2.bias,
            self.fc1.weight,
            self.fc1.bias,
            self.fc2.weight,
            self.fc2.bias,
            dim or self.max_dim,
            heads or self.max_heads,
            hidden or self.max_hidden,
            self.head_dim,
        )

    @torch.no_grad()
    def extract(self, dim: int, heads: int, hidden: int) -> ElasticBlock:
        """A block of exactly this size holding copies of the weights the sub-block uses."""
        out = ElasticBlock(dim, heads, self.head_dim, hidden, qkv_bias=self.qkv.bias is not None)
        inner = heads * self.head_dim
        out.norm1.weight.copy_(self.norm1.weight[:dim])
        out.norm1.bias.copy_(self.norm1.bias[:dim])
        w, b = self.qkv_slice(dim, heads)
        out.qkv.weight.copy_(w)
        if b is not None:
            out.qkv.bias.copy_(b)
        out.proj.weight.copy_(self.proj.weight[:dim, :inner])
        out.proj.bias.copy_(self.proj.bias[:dim])
        out.norm2.weight.copy_(self.norm2.weight[:dim])
        out.norm2.bias.copy_(self.norm2.bias[:dim])
        out.fc1.weight.copy_(self.fc1.weight[:hidden, :dim])
        out.fc1.bias.copy_(self.fc1.bias[:hidden])
        out.fc2.weight.copy_(self.fc2.weight[:dim, :hidden])
        out.fc2.bias.copy_(self.fc2.bias[:dim])
        return out


class ElasticPatchEmbed(nn.Module):
    """Patch embedding + class token + position embedding, all sliced to the first `dim` channels."""

    def __init__(self, dim: int, img_size: tuple[int, int], patch_size: int, in_chans: int = 3):
        super().__init__()
        self.max_dim, self.patch_size = dim, patch_size
        self.grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid[0] * self.grid[1], dim) * 0.02)

    def forward(self, images: Tensor, dim: int | None = None) -> Tensor:
        dim = dim or self.max_dim
        x = F.conv2d(images, self.proj.weight[:dim], self.proj.bias[:dim], stride=self.patch_size)
        x = x.flatten(2).transpose(1, 2)
        cls = self.cls_token[..., :dim].expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed[..., :dim]

    @torch.no_grad()
    def extract(self, dim: int) -> ElasticPatchEmbed:
        out = ElasticPatchEmbed(
            dim,
            (self.grid[0] * self.patch_size, self.grid[1] * self.patch_size),
            self.patch_size,
            self.proj.in_channels,
        )
        out.proj.weight.copy_(self.proj.weight[:dim])
        out.proj.bias.copy_(self.proj.bias[:dim])
        out.cls_token.copy_(self.cls_token[..., :dim])
        out.pos_embed.copy_(self.pos_embed[..., :dim])
        return out


class ElasticLayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor, dim: int | None = None) -> Tensor:
        return layer_norm(x, self, dim or self.normalized_shape[0])

    @torch.no_grad()
    def extract(self, dim: int) -> ElasticLayerNorm:
        out = ElasticLayerNorm(dim, eps=LN_EPS)
        out.weight.copy_(self.weight[:dim])
        out.bias.copy_(self.bias[:dim])
        return out


class ElasticDenseHead(nn.Module):
    """The multi-scale dense head for ViT features (all levels at the patch stride) with an elastic input
    width. GroupNorm, not BatchNorm: running statistics cannot be shared between subnets of other widths.

    `pooled=True` (image-level tasks): the refined features are averaged over the image before the 1×1
    prediction, giving (B, out_channels); the same as averaging the dense logits, at 1/HW of the cost."""

    def __init__(
        self,
        in_dim: int,
        num_levels: int,
        hidden: int,
        out_channels: int,
        pooled: bool = False,
        stride: int = 1,
    ):
        super().__init__()
        self.max_in = in_dim
        self.pooled, self.stride = pooled, stride  # stride: predict at 1/stride of the output size
        self.lateral = nn.ModuleList(nn.Conv2d(in_dim, hidden, 1) for _ in range(num_levels))
        self.refine = nn.Sequential(
            nn.GroupNorm(1, hidden),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.GroupNorm(1, hidden),
            nn.GELU(),
        )
        self.predict = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, feats: list[Tensor], output_size: tuple[int, int], in_dim: int | None = None) -> Tensor:
        in_dim = in_dim or self.max_in
        fused = sum(
            F.conv2d(f, lat.weight[:, :in_dim], lat.bias) for lat, f in zip(self.lateral, feats, strict=True)
        )
        refined = self.refine(fused)
        if self.pooled:
            return self.predict(refined.mean((2, 3), keepdim=True)).flatten(1)
        size = (output_size[0] // self.stride, output_size[1] // self.stride)
        return F.interpolate(self.predict(refined), size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def extract(self, in_dim: int) -> ElasticDenseHead:
        hidden = self.predict.in_channels
        out = ElasticDenseHead(
            in_dim, len(self.lateral), hidden, self.predict.out_channels, self.pooled, self.stride
        )
        for src, dst in zip(self.lateral, out.lateral, strict=True):
            dst.weight.copy_(src.weight[:, :in_dim])
            dst.bias.copy_(src.bias)
        out.refine.load_state_dict(self.refine.state_dict())
        out.predict.load_state_dict(self.predict.state_dict())
        return out
