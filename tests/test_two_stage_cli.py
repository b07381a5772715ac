"""MTNAS (method=two_stage) through the CLI on a tiny det + seg setting: every stage and artifact, a run killed
during the branch stage resumed to the same arch and test metrics, and the export of a derived subnet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from .conftest import TINY, assert_onnx_matches, kill_once_written, run_cli

pytestmark = pytest.mark.slow

RUN = [
    *TINY,
    "+experiment=mtnas_demo",
    "logger=none",
    "baselines.source=config",  # a 2-step detection baseline would have mAP 0: no Δm reference
    "baselines.metrics={semseg: {miou: 0.5, pixel_acc: 0.9}, detection: {map_50: 0.1}}",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "method.network.channels=4",
    "method.network.layers=3",
    "method.network.nodes=2",
    "method.network.branch_channels=4",
    "method.network.head_hidden=8",
    "method.presearch.image_size=[16,16]",
    "method.presearch.batch_size=8",
    "method.presearch.max_epochs=1",
    "method.gdas.warmup_epochs=0",
    "method.branch.max_epochs=2",
    "method.backbone.max_epochs=1",
    "method.derive.samples=2",
    "method.derive.bn_batches=1",
    "method.retrain.max_epochs=1",
]


def outcome(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    return {
        "arch": (run_dir / "arch.yaml").read_text(),
        "population": (run_dir / "search/population.jsonl").read_text(),
        "branches": {t: (run_dir / f"branch/{t}/genotype.yaml").read_text() for t in ("semseg", "detection")},
        "test": {name: m["test"] for name, m in results["models"].items()},
    }


def test_mtnas_end_to_end_a_killed_branch_stage_resumes_to_the_same_arch(tmp_path, cache_dir):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    res = run_cli([*RUN, f"hydra.run.dir={whole}"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert "one frozen-backbone forward per batch serves all 2 branches" in log
    assert "task losses divided by their branch-stage losses" in log
    for f in (
        "presearch/fit.json",
        "branch/semseg/genotype.yaml",
        "branch/detection/genotype.yaml",
        "backbone/fit.json",
        "search/pareto.json",
        "retrain/best.ckpt",
        "reference/best.ckpt",
        "report.md",
    ):
        assert (whole / f).exists(), f
    split = json.loads((whole / "branch/split.json").read_text())
    assert not set(split["weights"]) & set(split["arch"]) and len(split["weights"] + split["arch"]) == 32
    assert json.loads((whole / "backbone/split.json").read_text()) == split  # the same held-out half
    results = json.loads((whole / "results.json").read_text())
    assert results["method"] == "two_stage" and set(results["models"]) == {"multitask", "hard_sharing"}
    assert {"map_50", "miou"} <= set(results["models"]["multitask"]["test"]["detection"]) | set(
        results["models"]["multitask"]["test"]["semseg"]
    )
    arch = yaml.safe_load((whole / "arch.yaml").read_text())
    assert set(arch) == {"backbone", "branches"} and set(arch["branches"]) == {"semseg", "detection"}
    assert results["search"]["arch"] == arch
    genotype = yaml.safe_load((whole / "branch/semseg/genotype.yaml").read_text())
    assert genotype["loss_scale"] > 0 and arch["branches"]["semseg"] == genotype["genotype"]
    assert "hard_sharing" in (whole / "report.md").read_text()

    # SIGKILL once the branch stage's first epoch is checkpointed, then the same command again: the same
    # branches, arch, population and test metrics as the uninterrupted run.
    for done in ("presearch",):
        shutil.copytree(whole / done, killed / done)
    kill_once_written([*RUN, f"hydra.run.dir={killed}"], tmp_path, cache_dir, killed / "branch/last.ckpt")
    assert not (killed / "branch/fit.json").exists()
    res = run_cli([*RUN, f"hydra.run.dir={killed}"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "branch: resuming from" in res.stdout + res.stderr
    assert outcome(killed) == outcome(whole)

    # The presearch and backbone stages resume from their last.ckpt too (here after their last epoch: the
    # checkpoint is taken up, the stage finishes without training again, the rest of the run is unchanged).
    for stage in ("presearch", "backbone"):
        (whole / stage / "fit.json").unlink()
    before = outcome(whole)
    res = run_cli([*RUN, f"hydra.run.dir={whole}"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert "presearch: resuming from" in log and "backbone: resuming from" in log
    assert "branch: already trained" in log and outcome(whole) == before

    # Export: the searched arch with the backbone stage's weights, and the retrained net as ONNX.
    from mtnas.export.cli import main as export_main
    from mtnas.lit.checkpoint import load_checkpoint
    from mtnas.space.cells import CellArch

    out = tmp_path / "subnet.pt"
    export_main([str(whole / "backbone/last.ckpt"), str(whole / "arch.yaml"), str(out)])
    model = torch.load(out, weights_only=False).eval()
    net = load_checkpoint(whole / "backbone/last.ckpt", ("cells",)).net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["semseg"], net(x, CellArch.from_dict(arch))["semseg"])
    export_main(["--onnx", str(whole / "retrain/best.ckpt"), str(tmp_path / "subnet.onnx")])
    retrained = load_checkpoint(whole / "retrain/best.ckpt", ("model",)).model.eval()
    assert_onnx_matches(tmp_path / "subnet.onnx", retrained, ["semseg", "detection"], (64, 64))
