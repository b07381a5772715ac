"""Measured latency as a search cost: per arch, on the current device, cached on disk.

Latency cannot be derived analytically (it depends on the device, kernels and batch size), so each arch is
built once as a static subnet and timed (`cost.measure_latency`). Results are kept in a JSON file keyed by
device, batch size, input size and arch, so a resumed or repeated search never measures an arch twice, and
budgets such as `budget.latency_ms_max=20` can be checked during rejection sampling.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from mtnas.utils.distributed import rank_and_world
from mtnas.utils.io import atomic_write_json


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()}threads"


class LatencyTable:
    """`table(key, measure)` returns the cached milliseconds for `key`, measuring (and saving) on a miss."""

    def __init__(self, path: Path | None, device: torch.device, batch_size: int, image_size: tuple[int, int]):
        self.path = path
        self.prefix = f"{device_name(device)}|b{batch_size}|{image_size[0]}x{image_size[1]}|"
        self.entries: dict[str, float] = {}
        if path is not None and path.is_file():
            self.entries = json.loads(path.read_text())
        self.measured = 0

    def __call__(self, key: str, measure: Callable[[], float]) -> float:
        full = self.prefix + key
        if full not in self.entries:
            # Under DDP every process must see the same cost, or their budgeted samples (and so their
            # candidate lists) would diverge: rank 0 measures, the others receive its number. All ranks
            # ask for the same archs in the same order (one seeded RNG), so the broadcasts line up.
            rank, world = rank_and_world()
            value = [round(float(measure()), 4) if rank == 0 else None]
            if world > 1:
                torch.distributed.broadcast_object_list(value, src=0)
            self.entries[full] = value[0]
            self.measured += 1
            if self.path is not None and rank == 0:
                atomic_write_json(self.path, self.entries)
        return self.entries[full]
