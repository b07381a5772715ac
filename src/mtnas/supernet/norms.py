"""BatchNorm statistics of one arch of a weight-sharing supernet."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn


@torch.no_grad()
def recalibrate_batchnorm(
    net: nn.Module, forward: Callable[[Tensor], object], batches: Sequence[Tensor]
) -> None:
    """Reset the BatchNorm statistics of every module of `net` and re-estimate them by running `forward` (one
    arch's path) on `batches` (images): the statistics a supernet kept while archs were mixed or sampled are
    not those of one arch, and scoring archs with them ranks them poorly. Modes and momenta are restored."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    net.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    for images in batches:
        forward(images)
    for m, (momentum, training) in zip(norms, saved, strict=True):
        m.momentum = momentum
        m.train(training)


@contextmanager
def batch_statistics(net: nn.Module) -> Iterator[None]:
    """Inside: every BatchNorm of `net` normalises with the current batch's statistics and leaves its running
    statistics as they are. A supernet's running statistics mix every arch it sampled; judging one arch with
    them during training (its validation) would judge the mixture instead."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 − 0)·running + 0·batch
        m.train()
    try:
        yield
    finally:
        for m, (momentum, training) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.train(training)
