"""DARTS-style cells (Liu et al. 2019), the building block of MTNAS's backbone and branches; no search logic.

A cell takes the outputs of the two cells before it (`s0`, `s1`), brings both to `channels` channels
(a 1×1 conv, or a factorized reduction when `s0` is at twice `s1`'s resolution), and computes `nodes`
intermediate nodes: node i is the sum of ops applied to earlier states (the two inputs and nodes < i). The
cell's output is all intermediate nodes concatenated (`nodes × channels` channels). In a reduction cell the ops
reading the two inputs have stride 2.

`Cell` holds exactly the ops a genotype names (two per node); `MixedCell` holds every op on every edge and
runs, per edge, the ops whose gate is non-zero, each scaled by its gate (GDAS: one op per edge per step).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

# The op set of DARTS / MTNAS's released cells; `none` (the edge contributes nothing) only exists in search.
OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1):
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        )


class DilConv(nn.Sequential):
    """ReLU → depthwise k×k (dilation d) → pointwise 1×1 → BN."""

    def __init__(self, channels: int, kernel: int, stride: int, dilation: int):
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, kernel, stride, padding, dilation, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )


class SepConv(nn.Sequential):
    """Two stacked separable convolutions (the first with the stride), as DARTS."""

    def __init__(self, channels: int, kernel: int, stride: int):
        super().__init__(DilConv(channels, kernel, stride, 1), DilConv(channels, kernel, 1, 1))


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing pixels: two stride-2 1×1 convs, one shifted by a pixel, concatenated."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(cin, cout // 2, 1, stride=2, bias=False)
        self.conv2 = nn.Conv2d(cin, cout - cout // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv1(x), self.conv2(shifted)], 1))


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :: self.stride, :: self.stride] * 0.0


def build_op(name: str, channels: int, stride: int) -> nn.Module:
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels)
    kind, kernel = name.rsplit("_", 1)
    k = int(kernel.split("x")[0])
    if kind == "sep_conv":
        return SepConv(channels, k, stride)
    if kind == "dil_conv":
        return DilConv(channels, k, stride, 2)
    raise ValueError(f"unknown op {name!r}; ops are {list(OPS)}")


def num_edges(nodes: int) -> int:
    """Edges of a cell: node i reads the two inputs and the i nodes before it."""
    return sum(2 + i for i in range(nodes))


def edge_index(node: int, source: int) -> int:
    """Row of edge (source → node) in a cell's (edges, ops) gate or logit table."""
    return sum(2 + i for i in range(node)) + source


class CellBase(nn.Module):
    """The part of a cell every genotype has: the input preprocessing and the output concatenation."""

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction, self.channels = reduction, channels
        self.pre0 = (
            FactorizedReduce(c_prev_prev, channels)
            if reduction_prev
            else ReLUConvBN(c_prev_prev, channels, 1)
        )
        self.pre1 = ReLUConvBN(c_prev, channels, 1)

    def stride(self, source: int) -> int:
        return 2 if self.reduction and source < 2 else 1


class Cell(CellBase):
    """A cell of one genotype: per node, two (op, source) pairs; sources 0, 1 are the inputs, 2 + j node j."""

    def __init__(
        self,
        genotype: Sequence[Sequence[tuple[str, int]]],
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ):
        super().__init__(c_prev_prev, c_prev, channels, reduction, reduction_prev)
        self.sources = [[int(s) for _, s in node] for node in genotype]
        self.ops = nn.ModuleList(
            nn.ModuleList(build_op(op, channels, self.stride(int(s))) for op, s in node) for node in genotype
        )

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for ops, sources in zip(self.ops, self.sources, strict=True):
            out = None
            for op, s in zip(ops, sources, strict=True):
                y = op(states[s])
                out = y if out is None else out + y
            states.append(out)
        return torch.cat(states[2:], 1)


class MixedCell(CellBase):
    """Every op of `ops` on every edge. `forward(s0, s1, gates)`: gates (edges, ops); an edge's output is
    Σ_o gate[e, o]·op_o(x) over its non-zero gates only (a one-hot row runs one op; an all-zero row, none)."""

    def __init__(
        self,
        nodes: int,
        ops: Sequence[str],
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ):
        super().__init__(c_prev_prev, c_prev, channels, reduction, reduction_prev)
        self.nodes, self.op_names = nodes, tuple(ops)
        self.edges = nn.ModuleList(
            nn.ModuleList(build_op(op, channels, self.stride(s)) for op in self.op_names)
            for i in range(nodes)
            for s in range(2 + i)
        )

    def forward(self, s0: Tensor, s1: Tensor, gates: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        active: dict[int, list[int]] = {}
        for e, o in gates.detach().nonzero().tolist():  # one device sync per cell, not per edge
            active.setdefault(e, []).append(o)
        for i in range(self.nodes):
            out = None
            for s in range(2 + i):
                e = edge_index(i, s)
                for o in active.get(e, ()):
                    y = gates[e, o] * self.edges[e][o](states[s])
                    out = y if out is None else out + y
            if out is None:  # every edge of the node sampled `none`
                ref = states[1]
                size = (
                    ((ref.shape[-2] + 1) // 2, (ref.shape[-1] + 1) // 2) if self.reduction else ref.shape[-2:]
                )
                out = ref.new_zeros(ref.shape[0], self.channels, *size)
            states.append(out)
        return torch.cat(states[2:], 1)

    def op_module(self, node: int, source: int, op: str) -> nn.Module:
        return self.edges[edge_index(node, source)][self.op_names.index(op)]
