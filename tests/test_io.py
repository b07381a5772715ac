"""Artifacts are written atomically and with the mode any other file gets."""

from __future__ import annotations

import os
import stat

from mtnas.utils.io import atomic_write_json, read_json


def test_atomic_write_leaves_only_the_file_with_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "sub" / "results.json", {"a": 1})
    finally:
        os.umask(old)
    assert read_json(path) == {"a": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp alone would leave 0600
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
