"""Loading a run's checkpoints with a clear error when the file is not the kind that was asked for.

A user passes paths by hand (`supernet_ckpt=`, `mtnas-export`); a YAML file, a retrained model given where a
supernet is expected, or a supernet trained on other tasks must be named in one paragraph, not surface as an
unpickling error or a KeyError from deep inside torch or Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from mtnas.errors import ConfigError, MtnasError

Kind = Literal["supernet", "model"]
_WHAT = {
    "supernet": "a supernet checkpoint (a run's supernet/last.ckpt)",
    "model": "a trained model checkpoint (a run's retrain/, train/ or baselines/<task>/ best.ckpt or last.ckpt)",
}


def checkpoint_kind(hparams: dict) -> Kind | None:
    if "space" in hparams and "supernet" in hparams:
        return "supernet"
    if "model" in hparams and "tasks" in hparams:
        return "model"
    return None


def _fail(message: str, key: str | None) -> MtnasError:
    return ConfigError(key, message) if key else MtnasError(message)


def load_checkpoint(
    path: str | Path, kinds: tuple[Kind, ...], key: str | None = None, tasks: list[str] | None = None
):
    """The LightningModule stored at `path`, which must be one of `kinds`; `key` names the config key the
    path came from (for the error); `tasks`, when given, must be the tasks the checkpoint was trained on."""
    path = Path(path).expanduser()
    expected = " or ".join(_WHAT[k] for k in kinds)
    if not path.is_file():
        raise _fail(f"{path} does not exist; expected {expected}.", key)
    try:
        # Only the hyper-parameters are needed to tell the kind; the weights load below.
        hparams = torch.load(path, map_location="cpu", weights_only=False, mmap=True).get("hyper_parameters")
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-paragraph answer
        raise _fail(
            f"{path} is not a checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
            f"expected {expected}.",
            key,
        ) from None
    kind = checkpoint_kind(hparams or {})
    if kind not in kinds:
        found = {"supernet": _WHAT["supernet"], "model": _WHAT["model"]}.get(kind, "not an mtnas checkpoint")
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
    else:
        from mtnas.lit.multitask import MultiTaskLitModule as cls
    return cls.load_from_checkpoint(path, map_location="cpu")
