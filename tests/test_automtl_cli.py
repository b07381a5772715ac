"""AutoMTL through the CLI on a tiny setting: every stage and artifact, a killed policy stage resumed to the
same arch, a hand-edited arch retrained in another folder, and the export of a derived subnet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from .conftest import TINY, assert_onnx_matches, kill_once_written, run_cli

pytestmark = pytest.mark.slow

RUN = [
    *TINY,
    "+experiment=automtl_demo",
    "budget=none",  # the budget term is tested on its own (test_automtl.py); here the stages and files are
    "tasks=[semseg,depth]",
    "logger=none",
    "data.synthetic.height=32",
    "data.synthetic.width=32",
    "trainer.limit_train_batches=4",
    "method.pretrain.max_epochs=1",
    "method.policy.max_epochs=3",
    "method.policy.weight_steps=1",
    "method.policy.policy_steps=1",
    "method.derive.samples=2",
    "method.derive.bn_batches=1",
    "method.retrain.max_epochs=1",
]


def outcome(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    policy = torch.load(run_dir / "policy/last.ckpt", weights_only=False, map_location="cpu")
    return {
        "arch": (run_dir / "arch.yaml").read_text(),
        "population": (run_dir / "search/population.jsonl").read_text(),
        "logits": policy["state_dict"]["net.policy_logits"].tolist(),
        "test": {name: m["test"] for name, m in results["models"].items()},
    }


def test_automtl_end_to_end_a_killed_policy_resumes_to_the_same_arch(tmp_path, cache_dir):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    res = run_cli([*RUN, f"hydra.run.dir={whole}"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    for f in (
        "pretrain/fit.json",
        "policy/fit.json",
        "search/pareto.json",
        "pareto.png",
        "retrain/best.ckpt",
        "report.md",
    ):
        assert (whole / f).exists(), f
    split = json.loads((whole / "policy/split.json").read_text())
    assert not set(split["weights"]) & set(split["policy"])
    assert sorted(split["weights"] + split["policy"]) == list(range(32))
    results = json.loads((whole / "results.json").read_text())
    assert results["method"] == "automtl" and results["search"]["strategy"] == "policy"
    arch = yaml.safe_load((whole / "arch.yaml").read_text())
    assert [b["block"] for b in arch["blocks"]][:2] == ["blocks.0.0", "blocks.1.0"]  # mobilenetv3_small_100
    assert results["search"]["arch"] == arch
    population = [json.loads(line) for line in (whole / "search/population.jsonl").read_text().splitlines()]
    assert 1 <= len(population) <= 3 and all("params" in r["cost"] for r in population)
    assert "automtl" in (whole / "arch.yaml").read_text().splitlines()[0]
    # The study: the searched arch's replicate 0 is the run's retrain again; hard sharing = all shared.
    res = run_cli(
        [
            *RUN,
            "stage=study",
            "study.archs=0",
            "study.seeds=1",
            "study.random=false",
            f"hydra.run.dir={whole}",
        ],
        tmp_path,
        cache_dir,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    study = json.loads((whole / "study/study.json").read_text())
    assert study["archs"]["searched"]["test"][0] == results["models"]["multitask"]["test"]
    hard = next(c for c in study["archs"].values() if "hard sharing" in c["roles"])
    assert {v for b in hard["arch"]["blocks"] for k, v in b.items() if k != "block"} == {"shared"}

    # SIGKILL once the policy's first epoch is checkpointed, then the same command again: same policy, arch,
    # population and test metrics as the uninterrupted run. (The finished baselines and pretraining are copied
    # in: only the policy stage onwards is under test, and they are skipped as they would be in a rerun.)
    import shutil

    for done in ("baselines", "pretrain"):
        shutil.copytree(whole / done, killed / done)
    kill_once_written([*RUN, f"hydra.run.dir={killed}"], tmp_path, cache_dir, killed / "policy/last.ckpt")
    assert not (killed / "policy/fit.json").exists()
    res = run_cli([*RUN, f"hydra.run.dir={killed}"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "policy: resuming from" in res.stdout + res.stderr
    assert outcome(killed) == outcome(whole)

    # A hand-edited arch (first block specific for depth), beside the run's own arch.yaml, retrained in a fresh
    # folder and evaluated there: the baselines come from the run the arch file is in.
    arch["blocks"][0]["depth"] = "specific"
    edited = whole / "edited.yaml"
    edited.write_text(yaml.safe_dump(arch))
    other = tmp_path / "other"
    for stage in ("retrain", "evaluate"):
        res = run_cli(
            [*RUN, f"stage={stage}", f"arch={edited}", f"hydra.run.dir={other}"], tmp_path, cache_dir
        )
        assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((other / "results.json").read_text())["search"]["arch"] == arch
    assert yaml.safe_load((other / "retrain/arch.yaml").read_text()) == arch

    # Export: the derived arch with inherited policy-supernet weights, as a module and as ONNX.
    from mtnas.export.cli import main as export_main
    from mtnas.lit.policy import PolicyLitModule
    from mtnas.space.policy import PolicyArch

    out = tmp_path / "subnet.pt"
    export_main([str(whole / "policy/last.ckpt"), str(edited), str(out)])
    model = torch.load(out, weights_only=False).eval()
    net = PolicyLitModule.load_from_checkpoint(whole / "policy/last.ckpt", map_location="cpu").net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["depth"], net(x, PolicyArch.from_dict(arch))["depth"])
    export_main(["--onnx", str(whole / "retrain/best.ckpt"), str(tmp_path / "subnet.onnx")])
    from mtnas.lit.checkpoint import load_checkpoint

    retrained = load_checkpoint(whole / "retrain/best.ckpt", ("model",)).model.eval()
    assert_onnx_matches(tmp_path / "subnet.onnx", retrained, ["semseg", "depth"], (32, 32))
