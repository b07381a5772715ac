"""Same seed, same result — whatever the process: a run split into `stage=` commands, or killed with
SIGKILL and resumed, ends with the arch, population and test metrics of one uninterrupted `stage=all` run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import TINY, kill_once_written, run_cli

pytestmark = pytest.mark.slow

RUN = [
    *TINY,
    "+experiment=demo",
    "tasks=[semseg,depth]",
    "logger=none",
    "trainer.max_epochs=2",
    "supernet.max_epochs=3",
    "retrain.max_epochs=2",
    "search.population=4",
    "search.top_k=2",
    "search.mutations=2",
    "search.crossovers=2",
    "search.generations=2",
    "data.num_workers=2",  # augmentation in persistent data workers, resumed too
]


def outcome(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    return {
        "arch": (run_dir / "arch.yaml").read_text(),
        "population": (run_dir / "search/population.jsonl").read_text(),
        "test": {name: m["test"] for name, m in results["models"].items()},
        "delta_m": results["models"]["multitask"]["delta_m"],
    }


def test_split_and_killed_runs_end_like_one_uninterrupted_run(tmp_path, cache_dir):
    whole, split, killed = tmp_path / "whole", tmp_path / "split", tmp_path / "killed"
    res = run_cli([*RUN, f"hydra.run.dir={whole}"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    reference = outcome(whole)

    # The same run as separate commands: each stage in a fresh process.
    for stage in ("baselines", "supernet", "all"):
        res = run_cli([*RUN, f"stage={stage}", f"hydra.run.dir={split}"], tmp_path, cache_dir)
        assert res.returncode == 0, (stage, res.stderr[-3000:])
    assert outcome(split) == reference

    # Killed (SIGKILL: no cleanup at all) in the supernet's training, resumed and killed again in the search,
    # then in the retrain, then resumed to the end.
    for point in ("supernet/last.ckpt", "search/population.jsonl", "retrain/last.ckpt"):
        kill_once_written([*RUN, f"hydra.run.dir={killed}"], tmp_path, cache_dir, killed / point)
        assert not (killed / "results.json").exists(), point  # it was killed before the end
    res = run_cli([*RUN, f"hydra.run.dir={killed}"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert outcome(killed) == reference
