"""Append-only log of evaluated candidates (`search/population.jsonl`) and the Pareto front.

One JSON object per line: arch, cost, per-task metrics, Δm. Appending a line is the only write, so an
interrupted search loses at most the candidate being evaluated, and a resumed one skips every arch
already in the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def arch_key(arch_dict: Mapping[str, Any]) -> str:
    return json.dumps(arch_dict, sort_keys=True)


class PopulationLog:
    """`writable=False` (non-zero DDP ranks) keeps the records in memory without touching the file."""

    def __init__(self, path: str | os.PathLike, writable: bool = True):
        self.path = Path(path)
        self.writable = writable
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            with open(self.path) as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by an interruption: that candidate is evaluated again
                    self.records[arch_key(rec["arch"])] = rec

    def __contains__(self, arch_dict: Mapping[str, Any]) -> bool:
        return arch_key(arch_dict) in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, arch_dict: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.records.get(arch_key(arch_dict))

    def append(self, record: Mapping[str, Any]) -> None:
        self.records[arch_key(record["arch"])] = dict(record)
        if self.writable:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())


def pareto_front(records: Iterable[Mapping[str, Any]], cost_key: str = "params") -> list[dict[str, Any]]:
    """Records not dominated in (Δm ↑, cost ↓), sorted by cost."""
    recs = sorted(records, key=lambda r: (r["cost"][cost_key], -r["delta_m"]))
    front, best = [], float("-inf")
    for r in recs:
        if r["delta_m"] > best:
            front.append(dict(r))
            best = r["delta_m"]
    return front
