from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _threads_per_xdist_worker() -> int | None:
    """The cores a pytest-xdist worker may use: its share, not all of them each.

    Every torch process starts one thread per core. With one worker per core (`make test`), each worker's
    runs and the `mtnas` commands it starts would then compete for every core: on 2 cores the suite took
    967 s that way and 571 s with a thread each (same machine, one after the other)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None


if (_THREADS := _threads_per_xdist_worker()) is not None:
    # Before torch is imported (OpenMP reads these once), and inherited by every command the tests start.
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
    os.environ.setdefault("MKL_NUM_THREADS", str(_THREADS))

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from mtnas.cli import config_dir  # noqa: E402

if _THREADS is not None:  # in case a plugin imported torch first
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]

# Tiny, fast settings shared by every test that trains: a few steps on 64×64 synthetic scenes.
TINY = [
    "logger=csv",
    "model=mobilenetv3",
    "data.synthetic.height=64",
    "data.synthetic.width=64",
    "data.synthetic.num_train=32",
    "data.synthetic.num_val=16",
    "data.synthetic.num_test=16",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One synthetic-data cache for the whole session (generation is deterministic)."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["MTNAS_CACHE_DIR"] = str(path)
    return path


def compose_cfg(overrides: list[str], output_dir: Path | None = None):
    """Compose the real config (as the CLI would), with `paths.output_dir` pinned for in-process runs."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=False)
    if output_dir is not None:
        from omegaconf import OmegaConf

        OmegaConf.set_struct(cfg, False)
        cfg.paths.output_dir = str(output_dir)
    return cfg


def run_cli(
    args: list[str], cwd: Path, cache: Path, timeout: int = 600, prog: str = "mtnas"
) -> subprocess.CompletedProcess:
    """Run the console script `prog ARGS` in `cwd` as a user would; its exit code, stdout and stderr."""
    env = {**os.environ, "MTNAS_CACHE_DIR": str(cache), "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    exe = Path(sys.executable).parent / prog
    if os.environ.get("MTNAS_TEST_FRESH_PROCESSES") or not hasattr(os, "fork"):
        return subprocess.run(
            [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    return _fork_server().run(exe, prog, args, cwd, env, timeout)


class _ForkServer:
    """The client of tests/forkserver.py: the same command, ~7 s of imports sooner (see that file)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("forkserver.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        atexit.register(self.close)

    def close(self) -> None:
        """End of the test session: the server exits when its stdin closes."""
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def run(
        self, exe: Path, prog: str, args: list[str], cwd: Path, env: dict, timeout: float
    ) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            request = {"exe": str(exe), "prog": prog, "args": [str(a) for a in args], "cwd": str(cwd)}
            request |= {"env": env, "stdout": str(out), "stderr": str(err), "timeout": timeout}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
            if not reply:
                raise RuntimeError(f"the fork server died (exit code {self.proc.wait()})")
            reply = json.loads(reply)
            stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        if reply.get("timeout"):
            raise subprocess.TimeoutExpired([str(exe), *args], timeout, stdout, stderr)
        return subprocess.CompletedProcess([str(exe), *args], reply["returncode"], stdout, stderr)


_server: _ForkServer | None = None


def _fork_server() -> _ForkServer:
    global _server
    if _server is None or _server.proc.poll() is not None:
        _server = _ForkServer()
    return _server


def kill_once_written(args: list[str], cwd: Path, cache: Path, path: Path, timeout: float = 300) -> None:
    """Start `mtnas ARGS` and SIGKILL it as soon as `path` exists (a hard kill, as a crash or an OOM killer)."""
    import signal
    import time

    env = {**os.environ, "MTNAS_CACHE_DIR": str(cache), "WANDB_MODE": "offline"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mtnas"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def dataset_run_args(
    experiment: str, root: Path, tasks: list[str], run_dir: Path, size=(32, 64)
) -> list[str]:
    """CLI arguments for a few supernet training steps of `+experiment=<experiment>` on a fixture dataset
    (real readers, tiny ViT space, CPU): proves a user's `mtnas +experiment=<x>_search data.root=...`
    reads, batches and trains on that format."""
    return [
        f"+experiment={experiment}",
        f"data.root={root}",
        f"tasks=[{','.join(tasks)}]",
        f"data.image_size=[{size[0]},{size[1]}]",
        "stage=supernet",
        "trainer=cpu",
        "space=vit_demo",
        "budget=none",
        "logger=none",
        "supernet.max_epochs=1",
        "supernet.num_random=0",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.num_workers=0",
        f"hydra.run.dir={run_dir}",
    ]


def assert_onnx_matches(path: Path, model, tasks: list[str], image_size: tuple[int, int]) -> None:
    """The ONNX file `mtnas-export --onnx` wrote runs in onnxruntime on a batch of 3 (it was traced on 2)
    and gives `model`'s outputs, one per task, named after it."""
    import onnxruntime as ort
    import torch

    assert [p.name for p in path.parent.iterdir() if path.name in p.name] == [
        path.name
    ]  # one file, no leftovers
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == tasks
    x = torch.rand(3, 3, *image_size)
    got = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = model.eval()(x)
    for name, value in zip(tasks, got, strict=True):
        torch.testing.assert_close(torch.from_numpy(value), want[name], rtol=1e-4, atol=1e-5)
