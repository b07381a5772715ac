"""Counted cost of a module: parameters and FLOPs (torch's flop counter; 1 multiply-add = 2 FLOPs)."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_flops(module: nn.Module, image_size: tuple[int, int], batch_size: int = 1) -> int:
    """FLOPs of one forward pass on a (batch_size, 3, H, W) input, in eval mode."""
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    x = torch.zeros(batch_size, 3, *image_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        module(x)
    module.train(was_training)
    return int(counter.get_total_flops())


def vit_arch_params(
    arch,
    tasks: list[str],
    out_channels: dict[str, int],
    grid: tuple[int, int],
    patch_size: int,
    head_dim: int,
    num_levels: int = 3,
    in_chans: int = 3,
) -> int:
    """Parameters of a ViT supernet subnet, analytically (no module is built): equal to
    `count_params(supernet.extract(arch))`, tested."""
    from mtnas.supernet.vit import mlp_hidden

    d = arch.embed_dim
    n = in_chans * patch_size * patch_size * d + d + d + (1 + grid[0] * grid[1]) * d  # patch conv, cls, pos
    for i in _distinct_block_layers(arch, tasks):
        inner, hidden = arch.num_heads[i] * head_dim, mlp_hidden(d, arch.mlp_ratio[i])
        n += (
            2 * d
            + (d * 3 * inner + 3 * inner)
            + (inner * d + d)
            + 2 * d
            + (d * hidden + hidden)
            + (hidden * d + d)
        )
    n += 2 * d  # final norm
    for t in tasks:
        h, c = arch.heads[t], out_channels[t]
        n += num_levels * (d * h + h) + 2 * h + (9 * h * h + h) + 2 * h + (h * c + c)
    return n


def vit_arch_flops(
    arch,
    tasks: list[str],
    out_channels: dict[str, int],
    grid: tuple[int, int],
    patch_size: int,
    head_dim: int,
    num_levels: int = 3,
    in_chans: int = 3,
    image_level: Collection[str] = (),
) -> int:
    """FLOPs (2 per multiply-add) of one image through a ViT subnet, analytically; counts what torch's
    flop counter counts (matmuls, convolutions, attention), tested equal to `count_flops(extract(arch))`."""
    from mtnas.supernet.vit import mlp_hidden

    d, g = arch.embed_dim, grid[0] * grid[1]
    n_tok = g + 1
    f = 2 * g * in_chans * patch_size * patch_size * d
    for i in _distinct_block_layers(arch, tasks):
        inner, hidden = arch.num_heads[i] * head_dim, mlp_hidden(d, arch.mlp_ratio[i])
        f += 2 * n_tok * d * 3 * inner  # qkv
        f += 4 * n_tok * n_tok * inner  # q·kᵀ and attn·v
        f += 2 * n_tok * inner * d  # proj
        f += 4 * n_tok * d * hidden  # fc1 + fc2
    for t in tasks:
        h, c = arch.heads[t], out_channels[t]
        f += 2 * g * (num_levels * d * h + 9 * h * h)
        f += 2 * h * c * (1 if t in image_level else g)  # a pooled head predicts once, not per location
    return f


def _distinct_block_layers(arch, tasks: list[str]) -> list[int]:
    """Layer index of every block a subnet runs: one per distinct (layer, path) node."""
    from mtnas.supernet.vit import routes

    return [i for i, _ in {(i, key) for r in routes(arch, tasks).values() for i, key in enumerate(r)}]


@torch.no_grad()
def measure_latency(
    module: nn.Module,
    image_size: tuple[int, int],
    batch_size: int = 1,
    device: torch.device | str | None = None,
    warmup: int = 3,
    repeats: int = 10,
) -> float:
    """Median wall-clock milliseconds of one eval-mode forward pass of a (batch_size, 3, H, W) input on
    `device` (default: where the module's weights are), after `warmup` untimed passes."""
    import statistics
    import time

    device = torch.device(device) if device is not None else next(module.parameters()).device
    was_training = module.training
    module.eval().to(device)
    x = torch.zeros(batch_size, 3, *image_size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        module(x)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        module(x)
        sync()
        times.append(time.perf_counter() - start)
    module.train(was_training)
    return 1000 * statistics.median(times)
