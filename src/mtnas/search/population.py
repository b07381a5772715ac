"""Append-only log of evaluated candidates (`search/population.jsonl`).

One JSON object per line: arch, cost, per-task metrics, Δm. Appending a line is the only write, so an
interrupted search loses at most the candidate being evaluated, and a resumed one skips every arch
already in the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
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
