"""Counted cost of any module: parameters, FLOPs (torch's flop counter; 1 multiply-add = 2 FLOPs) and measured
latency. Analytic cost belongs to each supernet (`Supernet.cost(arch)`)."""

from __future__ import annotations

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
