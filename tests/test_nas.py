"""The NAS pipeline through the CLI on a tiny setting: supernet → search → retrain → evaluate, resume,
determinism of the search, budgets, and export of the chosen subnet."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from mtnas.search.population import arch_digest

from .conftest import TINY, assert_onnx_matches, run_cli

pytestmark = pytest.mark.slow

NAS_TINY = [
    *TINY,
    "+experiment=demo",
    "tasks=[semseg,depth]",
    "supernet.max_epochs=1",
    "retrain.max_epochs=1",
    "search.population=6",
    "search.top_k=3",
    "search.mutations=3",
    "search.crossovers=3",
    "search.generations=2",
]


def test_nas_pipeline_end_to_end_resume_and_export(tmp_path, cache_dir, capsys):
    run_dir = tmp_path / "run"
    # The demo's logger (offline); every candidate's latency measured too.
    args = [*NAS_TINY, "logger=wandb", "latency.in_search=true", f"hydra.run.dir={run_dir}"]
    res = run_cli(args, tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    for rel in [
        "baselines/baselines.json",
        "supernet/last.ckpt",
        "supernet/fit.json",
        "search/population.jsonl",
        "search/pareto.json",
        "arch.yaml",
        "retrain/best.ckpt",
        "results.json",
        "report.md",
        "pareto.png",
    ]:
        assert (run_dir / rel).is_file(), rel
    assert list((run_dir / "wandb").glob("offline-run-*"))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["search"]["evaluated"] >= 6
    assert results["search"]["arch"] == yaml.safe_load((run_dir / "arch.yaml").read_text())
    assert isinstance(results["models"]["multitask"]["delta_m"], float)
    fit = json.loads((run_dir / "retrain/fit.json").read_text())  # what the best checkpoint was chosen by
    assert fit["monitor"] == "val/delta_m" and isinstance(fit["val_delta_m"], float)
    assert fit["monitor_value"] == fit["val_delta_m"]
    assert all(m["latency_ms"] > 0 for m in results["models"].values())
    report = (run_dir / "report.md").read_text()
    assert "latency (ms)" in report
    # The report names the chosen arch and lists the Δm-vs-params front, one row per front member.
    assert "Chosen arch (arch.yaml): d" in report
    front_rows = [line for line in report.splitlines() if line.startswith("| 0.") and " · heads " in line]
    assert len(front_rows) == len(json.loads((run_dir / "search/pareto.json").read_text())["params"])
    assert results["search"]["searched"]["cost"]["params"] > 0
    # The run log records each stage, the search's outcome included.
    log = (run_dir / "cli.log").read_text()
    assert (
        "supernet: training on" in log
        and f"search: {results['search']['evaluated']} subnets evaluated" in log
        and "evaluate: multitask test Δm" in log
    )
    population = [json.loads(line) for line in (run_dir / "search/population.jsonl").read_text().splitlines()]
    fronts = json.loads((run_dir / "search/pareto.json").read_text())
    assert set(fronts) == {
        *("params", "flops", "latency_ms"),  # Δm against each measured cost
        *("objectives", "front", "hypervolume", "hypervolume_reference"),  # the search's own objectives
    }
    assert fronts["objectives"] == ["params"] and fronts["front"] == fronts["params"]
    assert 0 < fronts["hypervolume"] == results["search"]["hypervolume"]
    assert f"{fronts['hypervolume']:.4f}" in report
    assert all(r["cost"]["latency_ms"] > 0 for r in population)
    front = fronts["params"]
    assert {json.dumps(r["arch"], sort_keys=True) for r in front} <= {
        json.dumps(r["arch"], sort_keys=True) for r in population
    }

    # The study: each arch retrained with the run's recipe; replicate 0 of the searched arch is the run's own
    # retrain (same seed, same recipe: the same test metrics, whether retrained in `stage=all` or here).
    study = [*args, "stage=study", "study.archs=1", "study.seeds=1"]
    res = run_cli(study, tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    result = json.loads((run_dir / "study/study.json").read_text())
    roles = {r for c in result["archs"].values() for r in c["roles"]}
    assert roles == {"searched", "hard sharing", "best random", "spread"}
    assert result["archs"]["searched"]["test"][0] == results["models"]["multitask"]["test"]
    hard = result["archs"]["hard-sharing"]["arch"]
    assert all(not layer["task_specific"] for layer in hard["layers"])
    assert set(result["inherited_vs_retrained_val"]) == {"kendall_tau", "spearman_rho"}
    assert result["searched_minus_hard_sharing"]["n"] == 1 and (run_dir / "study/study.png").is_file()
    # The random search is an independent stream: not the search's own first candidates.
    first = [
        json.loads(line)["arch"] for line in (run_dir / "search/population.jsonl").read_text().splitlines()
    ]
    drawn = [json.loads(line)["arch"] for line in (run_dir / "study/random.jsonl").read_text().splitlines()]
    assert len(drawn) == len(first) and drawn[:3] != first[:3]
    assert "## Study: does the search work?" in (run_dir / "report.md").read_text()
    # A study stopped mid-way resumes: only what it had not finished trains again. A replicate folder that
    # trained another arch (the study's settings or rules changed since) is set aside, not taken for this one.
    (run_dir / "study/hard-sharing/seed0/fit.json").unlink()
    spread = run_dir / "study/spread-0/seed0"
    (spread / "arch.yaml").write_text(yaml.safe_dump(hard))
    res = run_cli(study, tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    log = (run_dir / "cli.log").read_text()
    assert f"resuming from {run_dir / 'study/hard-sharing/seed0/last.ckpt'}" in log
    assert log.count("study/searched/seed0/fit.json), skipping") == 1
    aside = spread.with_name(f"seed0-{arch_digest(hard)}")
    assert f"kept as {aside}" in log and (aside / "fit.json").is_file()
    assert yaml.safe_load((spread / "arch.yaml").read_text()) == result["archs"]["spread-0"]["arch"]

    # Re-running the search with the same seed and supernet evaluates nothing again ...
    (run_dir / "search/pareto.json").unlink()
    chosen = (run_dir / "arch.yaml").read_text()
    (run_dir / "arch.yaml").unlink()
    res = run_cli([*args, "stage=search"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    assert len((run_dir / "search/population.jsonl").read_text().splitlines()) == len(population)
    assert (run_dir / "arch.yaml").read_text() == chosen
    assert f"search: {len(population)} subnets evaluated (0 new)" in (run_dir / "cli.log").read_text()
    # ... and a fresh search from the same supernet and seed finds the same arch.
    (run_dir / "search/pareto.json").unlink()
    (run_dir / "search/population.jsonl").unlink()
    res = run_cli([*args, "stage=search"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    assert (run_dir / "arch.yaml").read_text() == chosen

    # Search in a new folder from this supernet; then retrain its arch.yaml in a third folder, given only
    # arch=, and evaluate there given nothing. The supernet's run lends its single-task baselines and its
    # weights down the chain (nothing is retrained or copied); sources.json records where they came from.
    fresh, third = tmp_path / "fresh", tmp_path / "third"
    res = run_cli(
        [
            *NAS_TINY,
            f"supernet_ckpt={run_dir / 'supernet/last.ckpt'}",
            f"hydra.run.dir={fresh}",
            "stage=search",
        ],
        tmp_path,
        cache_dir,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # Finishing that folder's other stages trains no second supernet: the searched one is the one it reused.
    res = run_cli([*NAS_TINY, f"hydra.run.dir={fresh}", "stage=supernet"], tmp_path, cache_dir)
    assert res.returncode == 0 and "not training one here" in res.stderr, res.stderr[-3000:]
    assert not (fresh / "supernet").exists()
    for extra in ([f"arch={fresh / 'arch.yaml'}", "stage=retrain"], ["stage=evaluate"]):
        res = run_cli([*NAS_TINY, f"hydra.run.dir={third}", *extra], tmp_path, cache_dir)
        assert res.returncode == 0, (extra, res.stderr[-3000:])
    assert not (fresh / "baselines").exists() and not (third / "baselines").exists()
    assert (fresh / "pareto.png").is_file()  # the search alone plots its front
    assert json.loads((third / "sources.json").read_text()) == {
        "baselines": str(run_dir / "baselines"),
        "supernet": str(run_dir / "supernet/last.ckpt"),
    }
    third_results = json.loads((third / "results.json").read_text())
    assert third_results["baselines_dir"] == str(run_dir / "baselines")
    assert third_results["search"]["arch"] == yaml.safe_load((fresh / "arch.yaml").read_text())
    third_report = (third / "report.md").read_text()
    assert f"baselines trained in {run_dir / 'baselines'}" in third_report
    # No search ran in that folder: the report names the evaluated arch, and no empty front or missing plot.
    assert "No search in this run folder." in third_report and "Arch (retrain/arch.yaml): d" in third_report
    assert "pareto" not in third_report.lower()

    # A hand-edited arch is retrained from scratch in another folder.
    other = tmp_path / "edited"
    shutil.copytree(run_dir / "baselines", other / "baselines")
    arch = yaml.safe_load(chosen)
    for layer in arch["layers"]:
        layer["task_specific"] = []
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(arch))
    res = run_cli(
        [
            *NAS_TINY,
            "stage=retrain",
            "retrain.init=scratch",
            f"arch={tmp_path / 'mine.yaml'}",
            f"hydra.run.dir={other}",
        ],
        tmp_path,
        cache_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert (other / "retrain/best.ckpt").is_file()
    assert yaml.safe_load((other / "retrain/arch.yaml").read_text()) == arch

    # Export: the written module reproduces the supernet on the chosen arch.
    # (In-process: `mtnas-export` as a command is run by test_cli.py's end-to-end test.)
    from mtnas.export.cli import main as export_main

    out = tmp_path / "subnet.pt"
    export_main([str(run_dir / "supernet/last.ckpt"), str(run_dir / "arch.yaml"), str(out)])
    model = torch.load(out, weights_only=False).eval()
    from mtnas.lit.supernet import SupernetLitModule
    from mtnas.space import ViTArch

    sup = SupernetLitModule.load_from_checkpoint(
        run_dir / "supernet/last.ckpt", map_location="cpu"
    ).net.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = sup(x, ViTArch.from_dict(yaml.safe_load(chosen)))
        got = model(x)
    torch.testing.assert_close(got["depth"], ref["depth"])

    # ... and as an ONNX graph that onnxruntime runs at any batch size, reproducing the subnet.
    export_main(
        [
            "--onnx",
            str(run_dir / "supernet/last.ckpt"),
            str(run_dir / "arch.yaml"),
            str(tmp_path / "subnet.onnx"),
        ]
    )
    assert_onnx_matches(tmp_path / "subnet.onnx", model, ["semseg", "depth"], (64, 64))

    # The retrained subnet exports as it is; paths in the wrong order get a one-line answer.
    export_main([str(run_dir / "retrain/best.ckpt"), str(tmp_path / "retrained.pt")])
    retrained = torch.load(tmp_path / "retrained.pt", weights_only=False).eval()
    with torch.no_grad():
        assert {k: v.shape for k, v in retrained(x).items()} == {k: v.shape for k, v in got.items()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        export_main([str(run_dir / "arch.yaml"), str(run_dir / "supernet/last.ckpt"), str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "arch.yaml is not a checkpoint" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:  # a supernet without the arch to extract
        export_main([str(run_dir / "supernet/last.ckpt"), str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "name one, e.g. the run's arch.yaml" in err


@pytest.mark.parametrize(
    "budget,key",
    [
        (["budget.params_max=1000"], "budget.params_max"),  # below the smallest arch
        # each bound inside the space, but no arch's (integer) param count lies between them
        (["budget.params_min=200000.1", "budget.params_max=200000.2"], "budget"),
        # a warm-up of shared blocks as long as the supernet's training: task blocks would never train
        (["supernet.shared_warmup=1"], "supernet.shared_warmup"),
        # timm weights that are not there: before the baselines, not after them
        (
            ["supernet.timm_init={model: vit_tiny_patch16_224, checkpoint: /no/such/weights.pth}"],
            "supernet.timm_init.checkpoint",
        ),
    ],
)
def test_what_would_fail_after_training_fails_before_it(tmp_path, cache_dir, budget, key):
    res = run_cli([*NAS_TINY, *budget, f"hydra.run.dir={tmp_path / 'r'}"], tmp_path, cache_dir)
    assert res.returncode == 2
    assert f"Config error at `{key}`" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r" / "baselines").exists()  # nothing was trained


def test_search_stage_without_space_is_a_config_error(tmp_path, cache_dir):
    res = run_cli([*TINY, "stage=search"], tmp_path, cache_dir)
    assert res.returncode == 2 and "Config error at `stage`" in res.stderr


def test_a_zero_baseline_metric_stops_before_the_supernet_and_names_the_fix(tmp_path, cache_dir):
    # e.g. Taskonomy class_object: a short baseline run can score top1 = 0, which makes Δm undefined.
    run_dir = tmp_path / "r"
    (run_dir / "baselines").mkdir(parents=True)
    zero = {"semseg": {"miou": 0.0, "pixel_acc": 0.3}, "depth": {"abs_err": 0.5, "rel_err": 0.2}}
    (run_dir / "baselines" / "baselines.json").write_text(json.dumps({"source": "run", "val": zero}))
    res = run_cli([*NAS_TINY, "stage=supernet", f"hydra.run.dir={run_dir}"], tmp_path, cache_dir)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "`semseg/miou` is 0" in res.stderr
    assert "++data.available_tasks.semseg.delta_m_metrics=[pixel_acc]" in res.stderr
    assert not (run_dir / "supernet").exists()  # stopped before any supernet training


def test_search_finetune_local_search_through_the_cli(tmp_path, cache_dir):
    """`search.finetune_local=1`: after the fine-tuned best candidate, one more is found by local search, a mutant
    of it scored into the population log and fine-tuned; the search chooses among both, and arch.yaml says how."""
    run_dir = tmp_path / "run"
    args = [
        *NAS_TINY,
        "search.finetune_top=1",
        "search.finetune_local=1",
        "search.finetune_screen=2",
        "search.finetune_epochs=1",
        "search.select=best",
        f"hydra.run.dir={run_dir}",
    ]
    res = run_cli([*args, "stage=all"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    population = [json.loads(line) for line in (run_dir / "search/population.jsonl").read_text().splitlines()]
    finetuned = json.loads((run_dir / "search/finetuned.json").read_text())
    assert len(finetuned) == 2 and finetuned[0]["arch"] != finetuned[1]["arch"]
    local = next(r for r in population if r["arch"] == finetuned[1]["arch"])
    assert finetuned[1]["inherited_delta_m"] == local["delta_m"]
    units = sorted((run_dir / "search/finetune").iterdir())
    scores = sorted(json.loads((u / "fit.json").read_text())["val_delta_m"] for u in units)
    assert len(units) == 2 and sorted(r["delta_m"] for r in finetuned) == scores
    chosen = max(finetuned, key=lambda r: r["delta_m"])
    header = (run_dir / "arch.yaml").read_text()
    assert yaml.safe_load(header) == chosen["arch"]
    assert "among 2 candidates re-scored after a 1-epoch fine-tune, 1 of them by local search" in header


def test_nsga2_searches_params_and_flops_and_picks_the_knee(tmp_path, cache_dir):
    """`search=nsga2` on the demo recipe (whose evolution settings it ignores, saying so): the front over Δm,
    params and FLOPs in pareto.json with its hypervolume, and `search.select=knee` picks a front member."""
    run_dir = tmp_path / "run"
    args = [
        *NAS_TINY,
        "search=nsga2",
        "search.population=6",
        "search.generations=2",
        "search.objectives=[params,flops]",
        "search.select=knee",
        f"hydra.run.dir={run_dir}",
    ]
    res = run_cli([*args, "stage=baselines"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (
        "`search.mutations`, `search.top_k` are not settings of mtnas.search.nsga2.NSGA2Search" in res.stderr
    )
    for stage in ("supernet", "search"):
        res = run_cli([*args, f"stage={stage}"], tmp_path, cache_dir)
        assert res.returncode == 0, res.stderr[-3000:]
    fronts = json.loads((run_dir / "search/pareto.json").read_text())
    population = [json.loads(line) for line in (run_dir / "search/population.jsonl").read_text().splitlines()]
    assert 6 <= len(population) <= 12 and fronts["objectives"] == ["params", "flops"]
    assert fronts["hypervolume"] > 0
    chosen = yaml.safe_load((run_dir / "arch.yaml").read_text())
    assert chosen in [r["arch"] for r in fronts["params"]]
    assert "(knee of the front)" in (run_dir / "arch.yaml").read_text()


def test_search_finetune_rescores_its_best_candidates_and_the_study_ranks_by_that_score(tmp_path, cache_dir):
    """`search.finetune_top=k`: the k best archs by inherited val Δm are each fine-tuned briefly from their
    inherited weights and the search selects by that score; the study scores its archs the same way and reports
    the fine-tuned score's τ beside the inherited one's."""
    run_dir = tmp_path / "run"
    args = [
        *NAS_TINY,
        "search.finetune_top=2",
        "search.finetune_epochs=1",
        "search.select=best",
        "search.parents=across_niches",  # evolution's parents chosen like the fine-tune's candidates
        "supernet.lr_scale=0.5",
        f"hydra.run.dir={run_dir}",
    ]
    res = run_cli([*args, "stage=all"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    optim = torch.load(run_dir / "supernet/last.ckpt", weights_only=False)["hyper_parameters"]["optim"]
    retrain = torch.load(run_dir / "retrain/best.ckpt", weights_only=False)["hyper_parameters"]["optim"]
    assert optim["lr"] == 0.5 * retrain["lr"]  # the supernet's learning rate: supernet.lr_scale × optim.lr
    population = [json.loads(line) for line in (run_dir / "search/population.jsonl").read_text().splitlines()]
    finetuned = json.loads((run_dir / "search/finetuned.json").read_text())

    # The candidates: the best by inherited val Δm of each sharing level (number of task-specific layers), in turn.
    def level(arch):
        return sum(bool(layer["task_specific"]) for layer in arch["layers"])

    best = max(population, key=lambda r: r["delta_m"])
    runner_up = max(
        (r for r in population if level(r["arch"]) != level(best["arch"])), key=lambda r: r["delta_m"]
    )
    assert [r["arch"] for r in finetuned] == [best["arch"], runner_up["arch"]]
    assert [r["inherited_delta_m"] for r in finetuned] == [best["delta_m"], runner_up["delta_m"]]
    units = sorted((run_dir / "search/finetune").iterdir())
    assert len(units) == 2 and all((u / "fit.json").is_file() and not list(u.glob("*.ckpt")) for u in units)
    scores = sorted(json.loads((u / "fit.json").read_text())["val_delta_m"] for u in units)
    assert sorted(r["delta_m"] for r in finetuned) == scores
    chosen = max(finetuned, key=lambda r: r["delta_m"])
    assert yaml.safe_load((run_dir / "arch.yaml").read_text()) == chosen["arch"]
    assert "among 2 candidates re-scored after a 1-epoch fine-tune" in (run_dir / "arch.yaml").read_text()

    res = run_cli([*args, "stage=study", "study.archs=1", "study.seeds=1"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((run_dir / "study/study.json").read_text())
    searched = result["archs"]["searched"]
    assert searched["finetuned_delta_m"] == chosen["delta_m"]  # the search's own fine-tune, reused
    assert searched["inherited_delta_m"] == chosen["inherited_delta_m"]
    assert set(result["finetuned_vs_retrained_val"]) == {"kendall_tau", "spearman_rho"}
    assert "fine-tuned val Δm" in (run_dir / "study/study.md").read_text()
