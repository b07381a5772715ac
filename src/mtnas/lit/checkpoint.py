"""Loading a run's checkpoints with a clear error when the file is not the kind that was asked for.

A user passes paths by hand (`supernet_ckpt=`, `mtnas-export`); a YAML file, a retrained model given where a
supernet is expected, or a supernet trained on other tasks must be named in one paragraph, not surface as an
unpickling error or a KeyError from deep inside torch or Lightning.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Literal

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from mtnas.errors import ConfigError, MtnasError

Kind = Literal["supernet", "policy", "cells", "model"]
_WHAT = {
    "supernet": "a supernet checkpoint (a run's supernet/last.ckpt)",
    "policy": "a block-policy supernet checkpoint (an automtl run's policy/last.ckpt or pretrain/last.ckpt)",
    "cells": "a cell-search checkpoint (a two_stage run's presearch/, branch/ or backbone/ last.ckpt)",
    "model": "a trained model checkpoint (a run's retrain/, train/ or baselines/<task>/ best.ckpt or last.ckpt)",
}


def checkpoint_kind(hparams: dict) -> Kind | None:
    if "cell_search" in hparams:
        return "cells"
    if "space" in hparams and "supernet" in hparams:
        return "supernet"
    if "policy" in hparams and "model" in hparams:
        return "policy"
    if "model" in hparams and "tasks" in hparams:
        return "model"
    return None


def _fail(message: str, key: str | None) -> MtnasError:
    return ConfigError(key, message) if key else MtnasError(message)


def read_checkpoint(path: Path, expected: str = "", key: str | None = None) -> dict:
    """The raw checkpoint dict at `path` (memory-mapped: cheap), or one paragraph saying it cannot be read and
    what to do about a run's own checkpoint that a kill or a full disk cut off."""
    try:
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one has no directory
            raise ValueError("not a complete zip archive, which torch.save writes")
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-paragraph answer
        raise _fail(
            f"{path} is not a checkpoint, or cannot be read ({str(err).splitlines()[0][:120]})"
            + (f"; {expected}" if expected else "")
            + ". If it is a run's own checkpoint cut off by a kill or a full disk, delete it and rerun: the "
            "stage that writes it trains again (from its last.ckpt when that one is intact).",
            key,
        ) from None


@contextlib.contextmanager
def _ctrl_c_after_the_write() -> Iterator[None]:
    """Ctrl-C during a checkpoint write takes effect once the write is done. Interrupted inside torch.save, the
    zip writer fails on its half-written archive (reported as a full disk) or aborts the process from its
    destructor, and the user never sees how to resume. Whatever Python handler is installed (the terminal's
    KeyboardInterrupt, the CLI's watch that wraps it, a user's own) runs then, once, as it would have."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets Python's SIGINT
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # ignored, or the OS default: no Python code runs mid-write
        yield
        return
    pressed: list[tuple[int, FrameType | None]] = []
    signal.signal(signal.SIGINT, lambda signum, frame: pressed.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        previous(*pressed[0])


class RunFolderCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically on the run folder's own filesystem: a temp file beside the target,
    fsync, then rename. (Lightning stages through the system temp folder and moves the file across
    filesystems, which a full disk can leave truncated under the final name.) A write that fails (full disk,
    read-only folder) is one paragraph naming the file."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as err:
            raise MtnasError(f"cannot write checkpoint {path}: {err.strerror or err}.") from None
        with _ctrl_c_after_the_write():  # a Ctrl-C keeps the checkpoint being written, then stops the run
            try:
                with os.fdopen(fd, "wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
                Path(tmp).unlink(missing_ok=True)
                raise MtnasError(
                    f"cannot write checkpoint {path}: {str(err).splitlines()[0]} (a full disk or a read-only "
                    "folder?). The last complete checkpoint is kept; free space and rerun to continue."
                ) from None
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


def load_checkpoint(
    path: str | Path, kinds: tuple[Kind, ...], key: str | None = None, tasks: list[str] | None = None
):
    """The LightningModule stored at `path`, which must be one of `kinds`; `key` names the config key the
    path came from (for the error); `tasks`, when given, must be the tasks the checkpoint was trained on."""
    path = Path(path).expanduser()
    expected = " or ".join(_WHAT[k] for k in kinds)
    if not path.is_file():
        raise _fail(f"{path} does not exist; expected {expected}.", key)
    # Only the hyper-parameters are needed to tell the kind; the weights load below.
    hparams = read_checkpoint(path, f"expected {expected}", key).get("hyper_parameters")
    kind = checkpoint_kind(hparams or {})
    if kind not in kinds:
        found = _WHAT.get(kind, "not an mtnas checkpoint")
        raise _fail(f"{path} is {found.split(' (')[0]}; expected {expected}.", key)
    trained = list(hparams["tasks"])
    if tasks is not None and sorted(trained) != sorted(tasks):
        raise _fail(
            f"{path} was trained on tasks {trained} but this run's `tasks` are {list(tasks)}; "
            f"run with tasks=[{','.join(trained)}] or use a checkpoint trained on these tasks.",
            key,
        )
    if kind == "supernet":
        from mtnas.lit.supernet import SupernetLitModule as cls
    elif kind == "policy":
        from mtnas.lit.policy import PolicyLitModule as cls
    elif kind == "cells":
        from mtnas.lit.cells import CellSearchLitModule as cls
    else:
        from mtnas.lit.multitask import MultiTaskLitModule as cls
    return cls.load_from_checkpoint(path, map_location="cpu")
