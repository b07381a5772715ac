"""Append-only log of evaluated candidates (`search/population.jsonl`).

One JSON object per line: arch, cost, per-task metrics, Δm. Appending a line is the only write, so an
interrupted search loses at most the candidate being evaluated, and a resumed one skips every arch already in
the file. A write cut off by a kill or a full disk leaves a torn last line: the reader reports and skips it,
and the first append cuts it off before writing (never onto it), so the file keeps one line per candidate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def arch_key(arch_dict: Mapping[str, Any]) -> str:
    return json.dumps(arch_dict, sort_keys=True)


def arch_digest(arch_dict: Mapping[str, Any]) -> str:
    """A short name for an arch's folders (12 hex digits of the SHA-1 of its `arch_key`)."""
    return hashlib.sha1(arch_key(arch_dict).encode()).hexdigest()[:12]


class PopulationLog:
    """`writable=False` (non-zero DDP ranks) keeps the records in memory without touching the file."""

    def __init__(self, path: str | os.PathLike, writable: bool = True):
        self.path = Path(path)
        self.writable = writable
        self.records: dict[str, dict[str, Any]] = {}
        self._torn = 0  # bytes of a torn last line, cut off before the next append
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
        for number, line in enumerate(data[:complete].decode("utf-8", "replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self.records[arch_key(rec["arch"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s: line %d is not a candidate record; skipped.", self.path, number)
        self._torn = len(data) - complete
        if self._torn:
            log.warning(
                "%s ends in a torn line (%d bytes, a write cut off by an interruption or a full disk): skipped; "
                "that candidate is evaluated again.",
                self.path,
                self._torn,
            )

    def __contains__(self, arch_dict: Mapping[str, Any]) -> bool:
        return arch_key(arch_dict) in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, arch_dict: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.records.get(arch_key(arch_dict))

    def append(self, record: Mapping[str, Any]) -> None:
        self.records[arch_key(record["arch"])] = dict(record)
        if not self.writable:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            if self._torn:
                f.truncate(f.tell() - self._torn)  # append mode writes at the (new) end
                self._torn = 0
            f.write((json.dumps(record, sort_keys=True) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
