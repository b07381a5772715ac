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


class ElasticBlock(nn.Module):
    """A pre-norm ViT block (timm `Block` layout: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)."""

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
        dim = dim or self.max_dim
        heads = heads or self.max_heads
        hidden = hidden or self.max_hidden
        b, n, _ = x.shape
        inner = heads * self.head_dim
        h = layer_norm(x, self.norm1, dim)
        w, bias = self.qkv_slice(dim, heads)
        qkv = F.linear(h, w, bias).reshape(b, n, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        a = a.transpose(1, 2).reshape(b, n, inner)
        x = x + F.linear(a, self.proj.weight[:dim, :inner], self.proj.bias[:dim])
        h = layer_norm(x, self.norm2, dim)
        h = F.gelu(F.linear(h, self.fc1.weight[:hidden, :dim], self.fc1.bias[:hidden]))
        return x + F.linear(h, self.fc2.weight[:dim, :hidden], self.fc2.bias[:dim])

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
    width. GroupNorm, not BatchNorm: running statistics cannot be shared between subnets of other widths."""

    def __init__(self, in_dim: int, num_levels: int, hidden: int, out_channels: int):
        super().__init__()
        self.max_in = in_dim
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
        return F.interpolate(
            self.predict(self.refine(fused)), size=output_size, mode="bilinear", align_corners=False
        )

    @torch.no_grad()
    def extract(self, in_dim: int) -> ElasticDenseHead:
        hidden = self.predict.in_channels
        out = ElasticDenseHead(in_dim, len(self.lateral), hidden, self.predict.out_channels)
        for src, dst in zip(self.lateral, out.lateral, strict=True):
            dst.weight.copy_(src.weight[:, :in_dim])
            dst.bias.copy_(src.bias)
        out.refine.load_state_dict(self.refine.state_dict())
        out.predict.load_state_dict(self.predict.state_dict())
        return out
