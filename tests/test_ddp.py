"""Metrics computed across DDP processes equal the single-process result on the same data."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtnas.metrics import BoundaryFScore, DepthMetrics, NormalMetrics, SemsegMetrics

from .conftest import TINY, run_cli

pytestmark = pytest.mark.slow


def _data():
    g = torch.Generator().manual_seed(0)
    target_seg = torch.randint(-1, 4, (4, 8, 8), generator=g)
    pred_seg = torch.randn(4, 4, 8, 8, generator=g)
    depth_t = torch.rand(4, 1, 8, 8, generator=g) * (torch.rand(4, 1, 8, 8, generator=g) > 0.2)
    depth_p = torch.rand(4, 1, 8, 8, generator=g)
    normal_t = torch.nn.functional.normalize(torch.randn(4, 3, 8, 8, generator=g), dim=1)
    normal_p = torch.randn(4, 3, 8, 8, generator=g)
    edge_t = (torch.rand(4, 1, 8, 8, generator=g) > 0.8).float()
    edge_p = torch.randn(4, 1, 8, 8, generator=g)
    return [
        (lambda: SemsegMetrics(4), pred_seg, target_seg),
        (DepthMetrics, depth_p, depth_t),
        (NormalMetrics, normal_p, normal_t),
        (lambda: BoundaryFScore(max_dist=0.1), edge_p, edge_t),
    ]


def _worker(rank: int, world: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    out = []
    for make, pred, target in _data():
        m = make()
        m.update(pred[rank::world], target[rank::world])  # each process sees half of the samples
        out.append({k: float(v) for k, v in m.compute().items()})
    if rank == 0:
        queue.put(out)
    dist.barrier()
    dist.destroy_process_group()


def test_metric_states_sync_across_two_processes():
    single = []
    for make, pred, target in _data():
        m = make()
        m.update(pred, target)
        single.append({k: float(v) for k, v in m.compute().items()})
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    synced = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
    for s, d in zip(single, synced, strict=True):
        assert s == pytest.approx(d, rel=1e-6, abs=1e-6)


def test_ddp_sim_training_and_evaluation_match_single_process(tmp_path, cache_dir):
    """Train a few steps with trainer=ddp_sim (2 CPU processes, gloo) through the CLI, then evaluate the
    same checkpoints in one process: the test metrics must agree."""
    ddp_dir = tmp_path / "ddp"
    args = [*TINY, "tasks=[semseg,depth]", "trainer=ddp_sim", f"hydra.run.dir={ddp_dir}"]
    res = run_cli(args, tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    one_dir = tmp_path / "single"
    shutil.copytree(ddp_dir, one_dir)
    (one_dir / "results.json").unlink()
    res = run_cli(
        [*TINY, "tasks=[semseg,depth]", "stage=evaluate", f"hydra.run.dir={one_dir}"], tmp_path, cache_dir
    )
    assert res.returncode == 0, res.stderr[-4000:]
    ddp = json.loads((ddp_dir / "results.json").read_text())["models"]
    one = json.loads((one_dir / "results.json").read_text())["models"]
    for name in one:
        for task, metrics in one[name]["test"].items():
            assert metrics == pytest.approx(ddp[name]["test"][task], rel=1e-4, abs=1e-5), (name, task)


def _fake_evaluate(archs):
    import os
    import time

    rank = int(os.environ["FAKE_RANK"])
    time.sleep(float(os.environ["FAKE_SLEEP"]) * (rank == 0))  # rank 0 finishes late
    return [{"delta_m": float(a), "rank": rank} for a in archs]


def _spread_worker(rank: int, world: int, port: int, queue, phases) -> None:
    import datetime
    import os

    from mtnas.utils.distributed import spread_across_processes

    os.environ["FAKE_RANK"] = str(rank)
    timeout = datetime.timedelta(seconds=2)
    dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", timeout=timeout, rank=rank, world_size=world)
    out = []
    for patient, sleep in phases:
        os.environ["FAKE_SLEEP"] = str(sleep)
        try:
            out.append(spread_across_processes(_fake_evaluate, patient=patient)(list(range(7))))
        except RuntimeError as err:  # the gather timed out
            out.append(str(err))
            break
    queue.put((rank, out))
    dist.destroy_process_group()


def test_work_is_spread_across_processes_each_item_done_once_and_patiently_when_asked():
    """Each item is done by one process and all processes get all results. A study's processes may finish
    hours apart: the group's timeout (2 s here) ends a plain gather, a patient spread waits for the late
    process (rank 0 finishing 3 s after rank 1)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    phases = [(False, 0.0), (True, 3.0), (False, 3.0)]
    procs = [ctx.Process(target=_spread_worker, args=(r, 2, port, queue, phases)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(queue.get(timeout=120) for _ in range(2))
    for p in procs:
        p.join(timeout=60)
    for rank in (0, 1):
        plain, patient = got[rank][:2]
        assert [r["delta_m"] for r in plain] == [float(i) for i in range(7)]  # all results, in order
        assert [r["rank"] for r in plain] == [i % 2 for i in range(7)]  # each done once, by one rank
        assert [r["delta_m"] for r in patient] == [float(i) for i in range(7)]
    assert isinstance(got[1][2], str)  # without patience rank 1's gather times out waiting for rank 0


def test_nas_pipeline_under_ddp_sim(tmp_path, cache_dir, monkeypatch):
    """Supernet (find_unused_parameters), distributed search, retrain and study with 2 CPU processes."""
    from .test_nas import NAS_TINY

    run_dir = tmp_path / "run"
    res = run_cli([*NAS_TINY, "trainer=ddp_sim", f"hydra.run.dir={run_dir}"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    lines = (run_dir / "search/population.jsonl").read_text().splitlines()
    archs = [json.dumps(json.loads(line)["arch"], sort_keys=True) for line in lines]
    assert len(archs) == len(set(archs)) >= 6  # every candidate evaluated once, written once
    deltas = [json.loads(line)["delta_m"] for line in lines]
    assert len(set(deltas)) > 1  # processes scored their own candidates (no cross-process metric sync)
    assert (run_dir / "retrain/best.ckpt").is_file() and (run_dir / "results.json").is_file()

    # `stage=search` alone, under DDP, from the trained supernet: a fresh search with the same seed picks
    # the same arch. A latency budget makes rank 0 time each arch and broadcast it (ranks must agree).
    chosen = (run_dir / "arch.yaml").read_text()
    for rel in ("search/population.jsonl", "search/pareto.json", "arch.yaml"):
        (run_dir / rel).unlink()
    args = [
        *NAS_TINY,
        "trainer=ddp_sim",
        "stage=search",
        "budget.latency_ms_max=1e6",
        f"hydra.run.dir={run_dir}",
    ]
    res = run_cli(args, tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    assert (run_dir / "arch.yaml").read_text().splitlines()[2:] == chosen.splitlines()[2:]
    records = [json.loads(line) for line in (run_dir / "search/population.jsonl").read_text().splitlines()]
    assert len(records) == len(lines) and all(r["cost"]["latency_ms"] > 0 for r in records)

    # `stage=study` under DDP: each process retrains its share of the archs alone, on its own device, and
    # writes its units' files; the results equal a one-process study of the same run, number for number.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same threads per process in both (Lightning keeps it)
    one_dir = tmp_path / "one"
    shutil.copytree(run_dir, one_dir)
    study = ["stage=study", "study.archs=0", "study.seeds=1", "study.random=false"]
    res = run_cli([*NAS_TINY, "trainer=ddp_sim", *study, f"hydra.run.dir={run_dir}"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    log = res.stdout + res.stderr
    assert "(process 0 of 2)" in log and "(process 1 of 2)" in log
    res = run_cli([*NAS_TINY, *study, f"hydra.run.dir={one_dir}"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-4000:]
    spread = json.loads((run_dir / "study/study.json").read_text())["archs"]
    one = json.loads((one_dir / "study/study.json").read_text())["archs"]
    assert set(spread) == set(one) == {"searched", "hard-sharing"}
    for tag in one:
        assert (run_dir / f"study/{tag}/seed0/fit.json").is_file()  # written by the process that trained it
        assert spread[tag]["test_delta_m"] == pytest.approx(one[tag]["test_delta_m"], rel=1e-6)
        assert spread[tag]["retrained_val_delta_m"] == pytest.approx(
            one[tag]["retrained_val_delta_m"], rel=1e-6
        )
