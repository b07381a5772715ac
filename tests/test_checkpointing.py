"""Every training run leaves a resumable `last.ckpt` after each epoch, also when interrupted mid-run."""

from __future__ import annotations

import contextlib

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from mtnas.errors import ConfigError, MtnasError
from mtnas.lit.checkpoint import load_checkpoint
from mtnas.run import checkpoint_callbacks


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def training_step(self, batch, _):
        return self.lin(batch[0]).pow(2).mean()

    def validation_step(self, batch, _):
        # Gets worse every epoch, so best.ckpt must stay at epoch 0 while last.ckpt moves on.
        self.log("val/score", -float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _Interrupted(Exception):
    pass


class _InterruptAt(pl.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise _Interrupted


def _trainer(callbacks, max_epochs):
    return pl.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )


@pytest.mark.parametrize("monitor", [None, "val/score"])
@pytest.mark.parametrize("stop", [1, 2])
def test_last_ckpt_after_every_epoch_and_resume(tmp_path, monitor, stop):
    """Interrupted before epoch `stop` and resumed: training continues from last.ckpt, and best.ckpt stays
    the best epoch's (the score gets worse every epoch) — also when the interruption came right after the
    epoch that set the best."""
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    with pytest.raises(_Interrupted):
        callbacks = checkpoint_callbacks(tmp_path, monitor, "max")
        _trainer([*callbacks, _InterruptAt(stop)], 5).fit(_Tiny(), data, data)
    # The epochs finished before the interruption: a rerun must not start from scratch.
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == stop - 1
    if monitor:
        assert torch.load(tmp_path / "best.ckpt", weights_only=False)["epoch"] == 0

    callbacks = checkpoint_callbacks(tmp_path, monitor, "max")
    trainer = _trainer(callbacks, 4)
    trainer.fit(_Tiny(), data, data, ckpt_path=str(tmp_path / "last.ckpt"))
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 3
    assert callbacks[0].best_model_path.endswith("best.ckpt" if monitor else "last.ckpt")
    if monitor:
        assert torch.load(tmp_path / "best.ckpt", weights_only=False)["epoch"] == 0


def test_wrong_files_given_as_checkpoints_are_named_in_one_paragraph(tmp_path):
    yaml_file = tmp_path / "arch.yaml"
    yaml_file.write_text("depth: 4\n")
    with pytest.raises(
        ConfigError, match=r"`supernet_ckpt`.*arch.yaml is not a checkpoint.*supernet/last.ckpt"
    ):
        load_checkpoint(yaml_file, ("supernet",), "supernet_ckpt")
    with pytest.raises(MtnasError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt", ("supernet",))

    # A retrained model where a supernet is expected (and the other way round) says which is which.
    model = tmp_path / "best.ckpt"
    torch.save({"hyper_parameters": {"tasks": ["semseg"], "model": {}}}, model)
    with pytest.raises(MtnasError, match="is a trained model checkpoint; expected a supernet checkpoint"):
        load_checkpoint(model, ("supernet",))
    supernet = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": {"tasks": ["semseg", "depth"], "space": {}, "supernet": {}}}, supernet)
    with pytest.raises(MtnasError, match="is a supernet checkpoint; expected a trained model"):
        load_checkpoint(supernet, ("model",))
    # ... and one trained on other tasks names both task lists.
    with pytest.raises(ConfigError, match=r"trained on tasks \['semseg', 'depth'\].*\['semseg', 'normal'\]"):
        load_checkpoint(supernet, ("supernet",), "supernet_ckpt", tasks=["semseg", "normal"])


def test_checkpoints_of_the_previous_version_load(tmp_path):
    """Before model and space specs had `_target_`, checkpoints stored a ViT subnet as `{arch, patch_size,
    head_dim}`, a timm model as `{backbone, head, min_reduction}` and a supernet's space with `name: vit`: they
    still load (evaluation and export of older run folders), as the same models."""
    from mtnas.lit.multitask import MultiTaskLitModule
    from mtnas.lit.supernet import SupernetLitModule
    from mtnas.space import ViTSpace

    available = {"semseg": {"type": "semseg", "num_classes": 5}, "depth": {"type": "depth"}}
    old_space = {
        "name": "vit",
        "embed_dims": [16],
        "depths": [3],
        "num_heads": [2],
        "mlp_ratios": [2.0],
        "head_hidden": [8],
    }
    common = {"optim": {"lr": 1e-3}, "loss": {}, "image_size": (32, 32)}
    sup = SupernetLitModule(["semseg", "depth"], available, old_space, {"patch_size": 8}, **common)
    assert isinstance(sup.space, ViTSpace)
    arch = sup.space.largest()
    old_models = [
        {"arch": arch.to_dict(), "patch_size": 8, "head_dim": 8},
        {"backbone": {"name": "test_resnet"}, "head": {"hidden": 8}, "min_reduction": 4},
    ]
    for i, model in enumerate(old_models):
        module = MultiTaskLitModule(["semseg", "depth"], available, model, **common)
        trainer = pl.Trainer(
            max_epochs=0, logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        trainer.strategy.connect(module)
        trainer.save_checkpoint(tmp_path / f"old{i}.ckpt")
        loaded = load_checkpoint(tmp_path / f"old{i}.ckpt", ("model",))
        x = torch.rand(1, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(loaded.model.eval()(x)["depth"], module.model.eval()(x)["depth"])
        assert loaded.hparams.model == model  # stored as it was; read as its spec


def test_checkpoints_are_written_atomically_beside_their_target(tmp_path, monkeypatch):
    """A checkpoint is written to a temp file in its own folder, then renamed; a write that fails (full disk)
    leaves the previous checkpoint intact and no temp file, and says so in one paragraph."""
    from mtnas.lit.checkpoint import RunFolderCheckpointIO

    io = RunFolderCheckpointIO()
    target = tmp_path / "unit" / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, target)
    assert torch.load(target)["epoch"] == 1 and [p.name for p in target.parent.iterdir()] == ["last.ckpt"]

    def full_disk(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(MtnasError, match=r"cannot write checkpoint .*last.ckpt.*full disk"):
        io.save_checkpoint({"epoch": 2}, target)
    monkeypatch.undo()
    assert torch.load(target)["epoch"] == 1 and [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize("handler", ["terminal", "cli"])
def test_ctrl_c_during_a_checkpoint_write_stops_the_run_after_the_write(tmp_path, monkeypatch, handler):
    """Ctrl-C inside torch.save broke the zip writer (reported as a full disk, exit 2, or an abort from its
    destructor); now the checkpoint being written is completed and kept, then the interrupt is raised —
    with Python's own handler (a terminal) and with the `mtnas` command's, which notes it and passes it on."""
    import os
    import signal

    from mtnas.cli import _InterruptWatch
    from mtnas.lit.checkpoint import RunFolderCheckpointIO

    real_save = torch.save

    def save_with_ctrl_c_in_the_middle(obj, f):
        f.write(b"")
        os.kill(os.getpid(), signal.SIGINT)
        real_save(obj, f)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with _InterruptWatch() if handler == "cli" else contextlib.nullcontext() as watch:
            installed = signal.getsignal(signal.SIGINT)
            monkeypatch.setattr(torch, "save", save_with_ctrl_c_in_the_middle)
            with pytest.raises(KeyboardInterrupt):
                RunFolderCheckpointIO().save_checkpoint({"epoch": 2}, tmp_path / "last.ckpt")
            monkeypatch.undo()
            assert signal.getsignal(signal.SIGINT) == installed  # restored
        assert watch is None or watch.seen  # the CLI learnt of the Ctrl-C (it says how to resume)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert torch.load(tmp_path / "last.ckpt")["epoch"] == 2 and len(list(tmp_path.iterdir())) == 1


@pytest.mark.slow
def test_a_truncated_last_ckpt_names_the_file_and_what_to_do(tmp_path, cache_dir):
    from .conftest import TINY, run_cli

    run_dir = tmp_path / "run"
    (run_dir / "train").mkdir(parents=True)
    good = tmp_path / "good.ckpt"
    torch.save({"hyper_parameters": {"tasks": ["semseg", "depth"], "model": {}}, "epoch": 0}, good)
    (run_dir / "train" / "last.ckpt").write_bytes(good.read_bytes()[:-40])  # cut off mid-write
    res = run_cli(
        [*TINY, "tasks=[semseg,depth]", "stage=train", f"hydra.run.dir={run_dir}"], tmp_path, cache_dir
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "train/last.ckpt is not a checkpoint, or cannot be read" in res.stderr
    assert "delete it and rerun" in res.stderr
