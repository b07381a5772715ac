"""The real CLI, as a user runs it (subprocess): end to end, resume, multirun, errors, --help cost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import TINY, assert_onnx_matches, run_cli

pytestmark = pytest.mark.slow


def test_help_does_not_import_torch():
    code = (
        "import sys; sys.argv = ['mtnas', '--help']\n"
        "from mtnas.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_FREE')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "== Config ==" in out.stdout and "Usage: mtnas [+experiment=RECIPE]" in out.stdout
    assert out.stdout.strip().endswith("TORCH_FREE"), out.stdout[-500:]


def test_bad_config_gives_one_paragraph_without_traceback(tmp_path, cache_dir):
    res = run_cli(["tasks=[semseg,sky]", "logger=none"], tmp_path, cache_dir)
    assert res.returncode == 2
    assert res.stderr.count("Config error at `tasks`") == 1 and "sky" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    # The run folder's log keeps the error as well.
    (log,) = tmp_path.glob("**/cli.log")
    assert "Config error at `tasks`" in log.read_text()


def test_missing_nyuv2_root_is_a_clear_error(tmp_path, cache_dir):
    res = run_cli(["data=nyuv2", "logger=none"], tmp_path, cache_dir)
    assert res.returncode == 2 and "`data.root`" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_given_data_root_wins_over_a_recipes_synthetic_block(tmp_path, cache_dir):
    # The demo recipe keeps its `data.synthetic` block when the user swaps the dataset; the user's folder
    # must be read (here: an empty one, so a clear error), never silently replaced by synthetic scenes.
    (tmp_path / "empty").mkdir()
    res = run_cli(
        ["+experiment=demo", "data=nyuv2", f"data.root={tmp_path / 'empty'}", "logger=none"],
        tmp_path,
        cache_dir,
    )
    assert res.returncode == 2, res.stdout[-2000:]
    assert "`train` is missing" in res.stderr and "Traceback" not in res.stderr


def test_end_to_end_then_resume(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = [*TINY, "+experiment=synthetic_mtl", "tasks=[semseg,depth]", f"hydra.run.dir={run_dir}"]
    res = run_cli(args, tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    for rel in [
        ".hydra/config.yaml",
        "baselines/semseg/best.ckpt",
        "baselines/semseg/last.ckpt",
        "baselines/depth/fit.json",
        "baselines/baselines.json",
        "train/best.ckpt",
        "train/last.ckpt",
        "train/fit.json",
        "results.json",
        "report.md",
    ]:
        assert (run_dir / rel).is_file(), rel
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["models"]) == {"baseline/semseg", "baseline/depth", "multitask"}
    mtl = results["models"]["multitask"]
    assert set(mtl["test"]) == {"semseg", "depth"}
    assert mtl["params"] > 0 and mtl["flops"] > 0
    assert results["baselines_source"] == "run"
    assert isinstance(mtl["delta_m"], float)
    assert "Δm" in res.stdout and "multi-task" in res.stdout  # the table is printed
    assert "Δm" in (run_dir / "report.md").read_text()
    # Every stage leaves a timestamped line in the run's log, with its val metrics.
    log = (run_dir / "cli.log").read_text()
    for line in (
        "baseline/semseg: training on",
        "baseline/depth: 1 epoch(s) in",
        "val semseg miou=",
        "Run folder",
    ):
        assert line in log, line

    # The hard-sharing model exports to ONNX (its checkpoint holds its model spec: nothing else is needed).
    from mtnas.lit.checkpoint import load_checkpoint

    onnx = tmp_path / "model.onnx"
    res_x = run_cli(
        ["--onnx", str(run_dir / "train/best.ckpt"), str(onnx)], tmp_path, cache_dir, prog="mtnas-export"
    )
    assert res_x.returncode == 0, res_x.stderr[-2000:]
    model = load_checkpoint(run_dir / "train/best.ckpt", ("model",)).model
    assert_onnx_matches(onnx, model, ["semseg", "depth"], (64, 64))

    # Rerunning the same command in the same folder trains nothing again ...
    fit_mtime = (run_dir / "train" / "fit.json").stat().st_mtime_ns
    res2 = run_cli(args, tmp_path, cache_dir)
    assert res2.returncode == 0, res2.stderr[-3000:]
    assert (run_dir / "train" / "fit.json").stat().st_mtime_ns == fit_mtime
    assert json.loads((run_dir / "results.json").read_text())["models"]["multitask"]["test"] == mtl["test"]

    # ... and an interrupted training run (fit.json not written yet) continues from last.ckpt.
    (run_dir / "train" / "fit.json").unlink()
    res3 = run_cli([*args, "stage=train", "trainer.max_epochs=2"], tmp_path, cache_dir)
    assert res3.returncode == 0, res3.stderr[-3000:]
    fit = json.loads((run_dir / "train" / "fit.json").read_text())
    assert fit["epochs"] == 2
    # The resumed run's curves go beside the first run's, which are kept.
    assert (run_dir / "train/csv/metrics.csv").is_file() and (run_dir / "train/csv-2/metrics.csv").is_file()
    assert "Restored" in res3.stderr + res3.stdout or fit["epochs"] == 2


def test_multirun_gives_each_job_its_own_folder_and_wandb_runs_offline(tmp_path, cache_dir):
    args = ["-m", *TINY, "logger=wandb", "tasks=[edge]", "stage=baselines", "seed=0,1", "paths.log_root=out"]
    res = run_cli(args, tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "out" / "default" / "multirun").glob("*/*") if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1"]
    seeds = []
    for job in jobs:
        fit = json.loads((job / "baselines" / "edge" / "fit.json").read_text())
        assert 0.0 <= fit["val"]["edge"]["odsf"] <= 1.0
        assert list((job / "wandb").glob("offline-run-*")), "wandb wrote no offline run"
        seeds.append((job / ".hydra" / "overrides.yaml").read_text())
    assert "seed=0" in seeds[0] and "seed=1" in seeds[1]


def test_ctrl_c_says_how_to_resume_and_a_rerun_resumes(tmp_path, cache_dir):
    """Ctrl-C during training: one line saying where the run is kept and how to continue (Lightning alone
    exits silently); the rerun says it resumes; a rerun with other `tasks` is refused, not mixed in."""
    import os
    import signal
    import time
    from pathlib import Path

    import torch

    run_dir = tmp_path / "run"
    base = [*TINY, "trainer.limit_train_batches=1", f"hydra.run.dir={run_dir}"]
    args = [*base, "stage=train"]
    env = {**os.environ, "MTNAS_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline"}
    exe = Path(sys.executable).parent / "mtnas"
    proc = subprocess.Popen(
        [str(exe), *args, "trainer.max_epochs=500"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background (`... &`) ignores SIGINT, and children inherit it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    last = run_dir / "train/last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # let the checkpoint's atomic write finish
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted. Finished models" in stderr and f"hydra.run.dir={run_dir}" in stderr
    assert "Traceback" not in stderr
    assert "mtnas: interrupted" in (run_dir / "cli.log").read_text()

    for stage in ("train", "evaluate"):  # refused before any work, whichever stage
        res = run_cli([*base, f"stage={stage}", "tasks=[semseg,depth]"], tmp_path, cache_dir)
        assert res.returncode == 2 and "Config error at `tasks`" in res.stderr and "last.ckpt" in res.stderr
        assert "Traceback" not in res.stderr

    done = torch.load(last, map_location="cpu", weights_only=False)["epoch"] + 1
    res = run_cli([*args, f"trainer.max_epochs={done + 1}"], tmp_path, cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"multitask: resuming from {last} ({done} epoch(s) done)" in res.stderr
    assert json.loads((run_dir / "train/fit.json").read_text())["epochs"] == done + 1
    # Each invocation's config is kept (Hydra rewrites .hydra/config.yaml), and a changed setting is said.
    history = sorted((run_dir / ".hydra/history").iterdir())
    assert [p.name for p in history] == ["001", "002"]  # the refused reruns did nothing and are not kept
    assert "max_epochs=500" in (history[0] / "overrides.yaml").read_text()
    assert f"trainer.max_epochs: 500 → {done + 1}" in res.stderr and "not retrained" in res.stderr


def test_a_second_process_on_a_run_folder_is_refused_and_a_killed_runs_lock_is_taken_over(
    tmp_path, cache_dir
):
    import fcntl
    import os

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args = [*TINY, "stage=evaluate", f"hydra.run.dir={run_dir}"]
    holder = {
        "pid": 4242,
        "host": "gpu-node-7",
        "since": "2026-11-30T05:00:00",
        "command": "+experiment=demo",
    }
    with open(run_dir / ".lock", "w") as f:  # a live run holds the folder
        f.write(json.dumps(holder))
        f.flush()
        fcntl.lockf(f.fileno(), fcntl.LOCK_EX)
        res = run_cli(args, tmp_path, cache_dir)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert (
        "is in use by process 4242 on gpu-node-7 since 2026-11-30T05:00:00 (+experiment=demo)" in res.stderr
    )
    # The holder was killed: its lock file stays, but the kernel released the lock; the next run goes on (here
    # to the missing checkpoints of this empty folder) and says whose lock it took over.
    res = run_cli(args, tmp_path, cache_dir)
    assert res.returncode == 2 and "baselines.json is missing" in res.stderr, res.stderr[-2000:]
    assert "taking over the lock of an ended run" in (run_dir / "cli.log").read_text()
    assert (run_dir / ".lock").read_text() == ""  # released: nothing to report to the next run
    assert os.getpid() != 4242


def test_a_hard_killed_runs_data_workers_do_not_keep_its_folder_locked(tmp_path):
    """SIGKILL a process holding a run folder while its forked child (a data worker) lives on: the folder is
    free at once, so the rerun right after a kill is not refused."""
    import os
    import signal
    import subprocess
    import sys

    from mtnas.run import hold_run_folder

    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from mtnas.run import hold_run_folder\n"
        "with hold_run_folder(Path(sys.argv[1])):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline() == "held\n"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with hold_run_folder(tmp_path):  # while the orphaned worker still runs: not "in use by process …"
            pass
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def test_an_unusable_run_folder_is_one_paragraph(tmp_path, cache_dir):
    """A run folder under a file (or on a read-only filesystem) fails before Hydra sets up its log there."""
    (tmp_path / "afile").write_text("x")
    res = run_cli([*TINY, f"hydra.run.dir={tmp_path / 'afile' / 'run'}"], tmp_path, cache_dir)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert (
        f"the run folder {tmp_path / 'afile' / 'run'} cannot be used: {tmp_path / 'afile'} is a file"
        in res.stderr
    )
