"""Counted cost of a module: parameters and FLOPs (torch's flop counter; 1 multiply-add = 2 FLOPs)."""

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
