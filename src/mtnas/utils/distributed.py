"""The few torch.distributed facts and patterns mtnas needs outside Lightning (search, latency, studies)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes; (0, 1) without a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def spread_across_processes(work: Callable[[list[T]], list[R]]) -> Callable[[list[T]], list[R]]:
    """Wrap a batch function so that, under torch.distributed, each process does every world-th item and
    all processes get all results, in order: each item is done exactly once, and the work goes faster
    with more GPUs. Every process must call it with the same list. Without a process group it is `work`."""
    import torch.distributed as dist

    if rank_and_world()[1] == 1:
        return work

    def run(items: list[T]) -> list[R]:
        rank, world = rank_and_world()
        mine = work(items[rank::world]) if items[rank::world] else []
        gathered: list = [None] * world
        dist.all_gather_object(gathered, mine)
        out: list = [None] * len(items)
        for r, results in enumerate(gathered):
            for j, result in enumerate(results):
                out[r + j * world] = result
        return out

    return run
