"""The few torch.distributed facts and patterns mtnas needs outside Lightning (search, latency, studies)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes; (0, 1) without a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def spread_across_processes(
    work: Callable[[list[T]], list[R]], patient: bool = False
) -> Callable[[list[T]], list[R]]:
    """Wrap a batch function so that, under torch.distributed, each process does every world-th item and
    all processes get all results, in order: each item is done exactly once, and the work goes faster
    with more GPUs. Every process must call it with the same list. Without a process group it is `work`.

    `patient`: the processes may finish hours apart (a study's retrains: one more retrain on some processes),
    longer than the process group's timeout allows a collective to wait; the results are then gathered over a
    group of their own that waits as long as it takes."""
    import torch.distributed as dist

    if rank_and_world()[1] == 1:
        return work

    def run(items: list[T]) -> list[R]:
        rank, world = rank_and_world()
        # gloo: gathers Python objects through CPU tensors whatever the default backend.
        group = dist.new_group(backend="gloo", timeout=timedelta(days=365)) if patient else None
        mine = work(items[rank::world]) if items[rank::world] else []
        gathered: list = [None] * world
        dist.all_gather_object(gathered, mine, group=group)
        if group is not None:
            dist.destroy_process_group(group)
        out: list = [None] * len(items)
        for r, results in enumerate(gathered):
            for j, result in enumerate(results):
                out[r + j * world] = result
        return out

    return run
