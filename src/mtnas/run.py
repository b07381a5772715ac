"""The services every stage of a run uses, whatever the method (DESIGN.md §2).

A `Run` is one invocation in one run folder: its tasks and data, the single-task baselines, training and
testing a unit (`fit` / `test`: skipped when done, resumed from `last.ckpt` when interrupted), the trainer
and logger factories, measured latency, the inputs a folder reuses from other run folders (`sources.json`),
each invocation's config (`.hydra/history/`), and the run log. Methods (`mtnas.methods`) talk to the run
only through these.

Under DDP every process runs the same sequence (Lightning needs each Trainer call on every rank); only rank 0
writes files, and values needed later are held in memory on all ranks rather than read back from files
another rank may not have finished writing. Inside `Run.alone()` each process instead trains and tests its
own units on its own device (a study's retrains, spread across the processes).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MethodType
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from mtnas.data.datamodule import MultiTaskDataModule
from mtnas.errors import ConfigError, MtnasError
from mtnas.lit.checkpoint import RunFolderCheckpointIO, read_checkpoint
from mtnas.lit.multitask import MultiTaskLitModule, nested_metrics
from mtnas.metrics.delta_m import check_baselines
from mtnas.search.cost import count_flops, count_params, measure_latency
from mtnas.tasks import build_tasks
from mtnas.utils.distributed import rank_and_world
from mtnas.utils.io import atomic_write_json, atomic_write_text, read_json

if TYPE_CHECKING:
    from mtnas.methods.base import Method

log = logging.getLogger("mtnas.run")


@dataclass(frozen=True)
class Unit:
    """One model a run trains: a single-task baseline, a multi-task model, or a method's supernet."""

    name: str
    dir: Path
    tasks: tuple[str, ...]


class Run:
    # Keys that select what a rerun does or reads, not what it trains: they may change freely between reruns.
    RERUN_KEYS = ("stage", "supernet_ckpt", "arch", "trainer.enable_progress_bar")
    SOURCES = "sources.json"  # {"baselines": dir, "supernet": ckpt, ...} reused from other run folders

    def __init__(self, cfg: DictConfig, method: Method):
        self.cfg = cfg
        self.method = method
        self._seed: int | None = None  # set while `reseeded`
        self._solo_group = None  # this process's one-member process group, while `alone`
        self.out = Path(cfg.paths.output_dir)
        self.tasks = list(cfg.tasks)
        self.available = OmegaConf.to_container(cfg.data.available_tasks, resolve=True)
        self.task_objs = build_tasks(self.tasks, self.available)
        self.dm = MultiTaskDataModule(
            OmegaConf.to_container(cfg.data, resolve=True),
            self.tasks,
            cache_dir=cfg.paths.cache_dir,
            progress=rank_zero_only.rank == 0,
            seed=int(cfg.seed),
        )
        self.baselines: dict[str, Any] | None = None  # the baselines stage's result, once it ran
        self.baselines_dir = self._find_baselines_dir()

    # -- basics ---------------------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        return int(self.cfg.seed) if self._seed is None else self._seed

    @contextmanager
    def reseeded(self, seed: int):
        """Train as a run with `seed=<seed>` would (initial weights, data order, augmentation): a study's
        replicates of one recipe."""
        self._seed, self.dm.seed = seed, seed
        self.dm.datasets.pop("train", None)  # its augmentation was drawn from the old seed
        try:
            yield
        finally:
            self._seed, self.dm.seed = None, int(self.cfg.seed)
            self.dm.datasets.pop("train", None)

    @contextmanager
    def alone(self) -> Iterator[None]:
        """Under DDP, let each process train and test units by itself, on its own device, and write their
        files: for work spread across the processes (`spread_across_processes`), where each process trains
        different models. Every process must enter it together (it creates process groups). Without a
        process group it changes nothing."""
        import torch.distributed as dist

        rank, world = rank_and_world()
        if world == 1:
            yield
            return
        # Metrics must not sync with processes training other models: each gets a group of its own.
        # new_group is collective, so every process creates every group.
        groups = [dist.new_group([r]) for r in range(world)]
        self._solo_group, writer = groups[rank], rank_zero_only.rank
        rank_zero_only.rank = 0  # this process writes its own units' files, checkpoints and logs
        # Lightning wraps a data module's own `prepare_data` in a barrier of all processes, which would wait
        # for processes busy training other units. So the data is prepared here, together, and the trainers
        # get the base class's no-op hook, which Lightning does not wrap.
        if rank == 0:
            self.dm.prepare_data()
        dist.barrier()
        self.dm.prepare_data = MethodType(pl.LightningDataModule.prepare_data, self.dm)
        try:
            yield
        finally:
            del self.dm.prepare_data
            dist.destroy_process_group(self._solo_group)
            self._solo_group, rank_zero_only.rank = None, writer

    @property
    def image_size(self) -> tuple[int, int]:
        return self.dm.image_size

    @property
    def device(self) -> torch.device:
        """Where evaluation outside Lightning (search candidates, latency) runs: the training device."""
        use_cuda = torch.cuda.is_available() and self.cfg.trainer.accelerator != "cpu"
        return torch.device("cuda" if use_cuda else "cpu")

    @property
    def is_writer(self) -> bool:
        """Only one process (rank 0) writes run files."""
        return rank_zero_only.rank == 0

    def section(self, key: str) -> dict[str, Any]:
        """A global config section as plain data (`optim`, `loss`, ...), for the modules a method builds."""
        return OmegaConf.to_container(self.cfg[key], resolve=True)

    def optim(self, lr_scale: float = 1.0) -> dict[str, Any]:
        """The `optim` section for a module a method builds, its learning rate `lr_scale` × `optim.lr`."""
        optim = self.section("optim")
        optim["lr"] = float(optim["lr"]) * lr_scale
        return optim

    def multitask_unit(self, folder: str) -> Unit:
        return Unit("multitask", self.out / folder, tuple(self.tasks))

    @property
    def baseline_units(self) -> list[Unit]:
        return [Unit(f"baseline/{t}", self.baselines_dir / t, (t,)) for t in self.tasks]

    # -- single-task baselines ---------------------------------------------------------------------------
    @property
    def owns_baselines(self) -> bool:
        return self.baselines_dir == self.out / "baselines"

    def config_baselines(self) -> dict[str, Any]:
        metrics = OmegaConf.to_container(self.cfg.baselines.metrics, resolve=True)
        return {"source": "config", "val": metrics, "test": metrics}

    def check_baselines(self, ref: dict[str, Any]) -> dict[str, Any]:
        """A baseline metric of 0 makes Δm undefined: say so now, not after a supernet has trained."""
        check_baselines(ref["val"], {t: task.delta_m_directions for t, task in self.task_objs.items()})
        return ref

    def load_baselines(self, required: bool) -> dict[str, Any] | None:
        if self.baselines is not None:
            return self.baselines
        if self.cfg.baselines.source == "config":
            return self.config_baselines()
        path = self.baselines_dir / "baselines.json"
        if path.exists():
            return self.check_baselines(read_json(path))
        if required:
            raise MtnasError(
                f"{path} is missing: run the baselines stage first (stage=baselines or stage=all) in this "
                "folder or in the run that supernet_ckpt=/arch= come from, or give reference numbers with "
                "baselines.source=config and baselines.metrics={task: {metric: value}}."
            )
        return None

    def baselines_val(self) -> dict[str, Any] | None:
        """The baselines' val metrics (Δm during training and search), or None before any exist."""
        return (self.load_baselines(required=False) or {}).get("val")

    def _find_baselines_dir(self) -> Path:
        """This run's `baselines/`, unless only a run that this one's inputs come from has them (or the run
        that one reused them from): a stage started in a new folder reuses those single-task baselines
        (never retrains or rewrites them)."""
        own = self.out / "baselines"
        if (own / "baselines.json").exists() or self.cfg.baselines.source != "run":
            return own
        found = self.find_input("baselines", "baselines", marker="baselines.json")
        if found is None or found.resolve() == own.resolve():
            return own
        self.announce(f"baselines: reusing {found} (from another run folder; recorded in sources.json)")
        self.record_source("baselines", found)
        return found

    # -- training and testing a unit ----------------------------------------------------------------------
    def seed_unit(self, unit: Unit) -> None:
        """Seed everything from (`seed`, unit name) before a unit's model is built: its initial weights do not
        depend on which stages ran before it in this process (`stage=` splits give a `stage=all` run's)."""
        pl.seed_everything(unit_seed(self.seed, unit.name), workers=True, verbose=False)

    def lit_module(self, unit: Unit, model: Mapping[str, Any], lr_scale: float = 1.0) -> MultiTaskLitModule:
        """A static model (`model`: its `_target_` spec) trained on `unit.tasks` at `lr_scale` × `optim.lr`;
        multi-task units track val Δm against the baselines when they exist. Seeded for its unit."""
        self.seed_unit(unit)
        return MultiTaskLitModule(
            tasks=list(unit.tasks),
            available_tasks=self.available,
            model=dict(model),
            optim=self.optim(lr_scale),
            loss=self.section("loss"),
            image_size=self.image_size,
            baselines_val=self.baselines_val() if len(unit.tasks) > 1 else None,
            delta_m_convention=self.cfg.delta_m.convention,
        )

    def fit(
        self,
        unit: Unit,
        module: pl.LightningModule,
        max_epochs: int | None = None,
        datamodule: pl.LightningDataModule | None = None,
    ) -> dict[str, Any]:
        """Train `module` into `unit.dir` (skipped when done, resumed from last.ckpt when interrupted) on the
        run's data, or on `datamodule` (e.g. a pre-search's classification set). Modules with a `monitor` also
        keep best.ckpt; the others (supernets) keep last.ckpt only."""
        dm = datamodule or self.dm
        done, last = unit.dir / "fit.json", unit.dir / "last.ckpt"
        if done.exists():
            info = read_json(done)
            self.check_same_tasks(unit, info.get("tasks"), done)
            self.announce(f"{unit.name}: already trained ({done}), skipping")
            return info
        resumed_after = None
        if last.exists():
            state = read_checkpoint(last)
            self.check_same_tasks(unit, (state.get("hyper_parameters") or {}).get("tasks"), last)
            resumed_after = int(state.get("epoch", 0)) + 1
            del state
        self.own_metrics(module)
        monitor, mode = getattr(module, "monitor", (None, "min"))
        callbacks = [EpochSeed(self.seed, unit.name), *checkpoint_callbacks(unit.dir, monitor, mode)]
        logger = self.logger(unit)
        unused = getattr(module, "uses_weight_subsets", False)
        trainer = self.trainer(
            unit,
            callbacks,
            logger,
            max_epochs,
            unused_parameters=unused,
            # Alternating subsets: the data module's batch sampler shares each batch among the processes itself.
            distributed_sampler=dm.alternating is None,
        )
        if resumed_after is not None:
            self.announce(f"{unit.name}: resuming from {last} ({resumed_after} epoch(s) done)")
        else:
            self.announce(f"{unit.name}: training on {list(unit.tasks)} → {unit.dir}")
        started = time.perf_counter()
        # The epoch this fit starts at, known before Lightning builds the first data iterator (data workers
        # prefetch as soon as it exists, before any epoch hook runs); EpochSeed moves it on each epoch.
        dm.set_epoch(resumed_after or 0)
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
        best = callbacks[1].best_model_path or str(last)  # [EpochSeed, best or last, (last)]
        val = trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
        info = {
            "unit": unit.name,
            "tasks": list(unit.tasks),
            "val": nested_metrics(val[0], "val") or {k: float(v) for k, v in val[0].items()},
            "best_ckpt": Path(best).name,
            "monitor": monitor,
            # The value the best checkpoint was chosen by (e.g. val Δm), re-measured on that checkpoint.
            "monitor_value": float(val[0][monitor]) if monitor in val[0] else None,
            "epochs": trainer.current_epoch,
        }
        if "val/delta_m" in val[0]:
            info["val_delta_m"] = float(val[0]["val/delta_m"])
        self.write_json(done, info)
        close_logger(logger)
        self.announce(
            f"{unit.name}: {info['epochs']} epoch(s) in {time.perf_counter() - started:.0f} s; "
            f"val {_brief(info['val'])}"
            + (f", Δm {info['val_delta_m']:+.2f} %" if "val_delta_m" in info else "")
            + f" ({info['best_ckpt']})"
        )
        return info

    def test(self, unit: Unit) -> dict[str, Any]:
        """Test metrics, params, FLOPs and latency of the unit's best (else last) checkpoint."""
        from mtnas.lit.checkpoint import load_checkpoint

        best = unit.dir / "best.ckpt"
        ckpt = best if best.exists() else unit.dir / "last.ckpt"
        if not ckpt.exists():
            raise MtnasError(
                f"{unit.dir} has no best.ckpt or last.ckpt for {unit.name}: run the training stages first "
                f"(stage=all), or point hydra.run.dir at the run folder that holds them."
            )
        module = load_checkpoint(ckpt, ("model",))
        self.own_metrics(module)
        trainer = self.trainer(unit, [], logger=False)
        res = trainer.test(module, datamodule=self.dm, verbose=False)
        return {
            "tasks": list(unit.tasks),
            "checkpoint": str(ckpt.relative_to(self.out) if ckpt.is_relative_to(self.out) else ckpt),
            "test": nested_metrics(res[0], "test"),
            "params": count_params(module.model),
            "flops": count_flops(module.model, self.image_size),
            "latency_ms": self.latency(module.model),
        }

    def own_metrics(self, module: torch.nn.Module) -> None:
        """While `alone`, the module's torchmetrics sync within this process only."""
        if self._solo_group is not None:
            from torchmetrics import Metric

            for m in module.modules():
                if isinstance(m, Metric):
                    m.process_group = self._solo_group

    def latency(self, model: torch.nn.Module) -> float:
        """Median eval-mode forward time (ms) on the device the run trains on (`latency` config)."""
        lcfg = self.cfg.latency
        return measure_latency(
            model, self.image_size, int(lcfg.batch_size), self.device, int(lcfg.warmup), int(lcfg.repeats)
        )

    def check_trained_tasks(self, dirs: list[Path]) -> None:
        """Multi-task models (and supernets) already in these folders must be for this run's tasks."""
        unit = self.multitask_unit(".")
        for d in dirs:
            if (d / "fit.json").exists():
                self.check_same_tasks(unit, read_json(d / "fit.json").get("tasks"), d / "fit.json")
            elif (d / "last.ckpt").exists():
                state = read_checkpoint(d / "last.ckpt")
                self.check_same_tasks(
                    unit, (state.get("hyper_parameters") or {}).get("tasks"), d / "last.ckpt"
                )

    def check_same_tasks(self, unit: Unit, trained: list[str] | None, path: Path) -> None:
        """A run folder continued with other `tasks` must not mix models trained for different tasks."""
        if trained is not None and sorted(trained) != sorted(unit.tasks):
            raise ConfigError(
                "tasks",
                f"{path} was trained on tasks {list(trained)} but this run's tasks are {list(unit.tasks)}. "
                f"Continue this run folder with tasks=[{','.join(trained)}], or start a new one "
                "(a new hydra.run.dir) for these tasks.",
            )

    # -- trainer and logger factories -------------------------------------------------------------------
    def trainer(
        self,
        unit: Unit,
        callbacks: list,
        logger,
        max_epochs: int | None = None,
        unused_parameters: bool = False,
        distributed_sampler: bool = True,
    ) -> pl.Trainer:
        kwargs = OmegaConf.to_container(self.cfg.trainer, resolve=True)
        if not distributed_sampler:
            kwargs["use_distributed_sampler"] = False
        if max_epochs is not None:
            kwargs["max_epochs"] = int(max_epochs)
        if self._solo_group is not None:  # `alone`: this process's device only
            from pytorch_lightning.strategies import SingleDeviceStrategy

            device = self.device
            if device.type == "cuda":
                device = torch.device("cuda", torch.cuda.current_device())  # DDP set it per process
            devices = [device.index] if device.type == "cuda" else 1
            kwargs.update(
                devices=devices, num_nodes=1, strategy=SingleDeviceStrategy(device), sync_batchnorm=False
            )
        elif unused_parameters and kwargs.get("strategy") == "ddp":
            # Each supernet step uses a subset of the weights (sampled archs): DDP must not wait for the rest.
            kwargs["strategy"] = "ddp_find_unused_parameters_true"
        progress = bool(kwargs.pop("enable_progress_bar", True))
        callbacks = list(callbacks)
        if progress:
            from pytorch_lightning.callbacks import RichProgressBar

            callbacks.append(RichProgressBar(leave=True))
        return pl.Trainer(
            **kwargs,
            plugins=[RunFolderCheckpointIO()],
            callbacks=callbacks,
            logger=logger,
            default_root_dir=str(unit.dir),
            enable_progress_bar=progress,
            enable_model_summary=False,
        )

    def logger(self, unit: Unit):
        kind = self.cfg.logger.name
        if kind == "none":
            return False
        if kind == "csv":
            from pytorch_lightning.loggers import CSVLogger

            # A resumed run logs into csv-2/, csv-3/, ...: Lightning would overwrite the earlier curves.
            version = next(
                v for v in ("csv", *(f"csv-{i}" for i in range(2, 10_000))) if not (unit.dir / v).exists()
            )
            return CSVLogger(save_dir=str(unit.dir), name="", version=version)
        from pytorch_lightning.loggers import WandbLogger

        quiet_wandb()
        return WandbLogger(
            save_dir=str(self.out),
            project=self.cfg.logger.project,
            entity=self.cfg.logger.entity,
            offline=bool(self.cfg.logger.offline),
            name=f"{self.cfg.experiment_name}/{unit.name}",
            group=f"{self.cfg.experiment_name}/{self.out.name}",
            job_type=unit.name.split("/")[0],
            config=OmegaConf.to_container(self.cfg, resolve=True),
        )

    # -- inputs that come from other run folders ----------------------------------------------------
    def sources(self, run_dir: Path | None = None) -> dict[str, str]:
        path = (run_dir or self.out) / self.SOURCES
        return read_json(path) if path.exists() else {}

    def record_source(self, kind: str, path: Path) -> None:
        """Remember a reused input, so later stages in this folder (and runs given this folder's files)
        find it without the command-line argument that named it."""
        if self.is_writer and self.sources().get(kind) != str(path):
            atomic_write_json(self.out / self.SOURCES, {**self.sources(), kind: str(path)})

    def linked_runs(self) -> list[Path]:
        """Other run folders this run's input files (e.g. `supernet_ckpt=`, `arch=`) come from."""
        return [r for r in self.method.linked_runs() if r != self.out.resolve()]

    def find_input(self, kind: str, relative: str, marker: str = "") -> Path | None:
        """An input reused from elsewhere: as this folder recorded it, else `relative` in a linked run
        folder, else what that folder reused itself. A candidate counts when `candidate/marker` exists."""
        candidates = [self.sources().get(kind)]
        for run_dir in self.linked_runs():
            candidates += [run_dir / relative, self.sources(run_dir).get(kind)]
        return next((Path(c) for c in candidates if c and (Path(c) / marker).exists()), None)

    # -- one process per run folder ------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run folder for this invocation (see `hold_run_folder`). Under DDP the launching process
        (rank 0) holds it for all ranks."""
        if not self.is_writer:
            yield
            return
        with hold_run_folder(self.out):
            yield

    # -- the run folder's records -------------------------------------------------------------------
    def keep_config_history(self) -> None:
        """Hydra rewrites `.hydra/config.yaml` on every run in a folder; keep each invocation's copy in
        `.hydra/history/NNN/`, and warn when a rerun changes the settings the folder was first run with."""
        hydra_dir = self.out / ".hydra"
        if not self.is_writer or not (hydra_dir / "config.yaml").exists():
            return
        history = sorted((hydra_dir / "history").glob("[0-9]*/config.yaml"))
        dest = hydra_dir / "history" / f"{len(history) + 1:03d}"
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "overrides.yaml"):
            if (hydra_dir / name).exists():
                atomic_write_text(dest / name, (hydra_dir / name).read_text())
        if not history:
            return
        now = _flat(OmegaConf.to_container(OmegaConf.load(hydra_dir / "config.yaml")))
        configs = ((h, _flat(OmegaConf.to_container(OmegaConf.load(h)))) for h in history)
        first = next(((h, c) for h, c in configs if "method._target_" in c), None)
        if first is None:
            log.warning(
                "This folder was written by an earlier mtnas (its config in %s has no `method`); its finished "
                "stages are reused as they are.",
                history[0].parent,
            )
            return
        path, before = first
        changed = sorted(
            k
            for k in before.keys() | now.keys()
            if before.get(k) != now.get(k)
            and not k.startswith(self.RERUN_KEYS)
            and not (k.startswith("method.") and _wiring(now.get(k)))
        )
        if changed:
            log.warning(
                "This folder was first run with other settings (%s%s; that config is in %s). "
                "Finished stages are reused as they are, not retrained; use a new folder to train "
                "with the new settings.",
                ", ".join(f"{k}: {before.get(k)!r} → {now.get(k)!r}" for k in changed[:6]),
                ", …" if len(changed) > 6 else "",
                path.parent,
            )

    def write_json(self, path: Path, obj: Any) -> None:
        if self.is_writer:
            atomic_write_json(path, obj)

    def write_text(self, path: Path, text: str) -> None:
        if self.is_writer:
            atomic_write_text(path, text)

    def announce(self, text: str) -> None:
        # Through logging, so the run folder's cli.log keeps a timestamped record of every stage.
        if self.is_writer:
            log.info(text)

    @contextmanager
    def progress(self, description: str) -> Iterator:
        """A rich progress bar for work outside Lightning (rank 0 only); yields `(done, total) -> None`."""
        if not self.is_writer:
            yield lambda done, total: None
            return
        from rich.progress import Progress

        bar = Progress()
        bar.start()
        task = bar.add_task(description, total=None)
        try:
            yield lambda done, total: bar.update(task, completed=done, total=total)
        finally:
            bar.stop()


RUN_FOLDER_LOCK = ".lock"


@contextmanager
def hold_run_folder(folder: Path) -> Iterator[None]:
    """Hold a run folder: a second `mtnas` on the same folder would train and append everything twice.
    An OS lock on `.lock`, released by the kernel when the process ends however it ends, so a killed run's
    lock is never stale; the file says who holds it. A POSIX record lock (`lockf`), not `flock`: forked data
    workers would inherit an `flock` and hold the folder for seconds after a hard kill of their run,
    refusing the rerun. Hold it once per process: closing any other descriptor of `.lock` would release it."""
    import errno
    import fcntl
    import json
    import socket
    import sys
    from datetime import datetime

    path = folder / RUN_FOLDER_LOCK
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise MtnasError(f"cannot write in the run folder {folder}: {err.strerror or err}.") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                raise MtnasError(f"cannot lock the run folder {folder}: {err.strerror or err}.") from None
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip()
            try:
                who = json.loads(holder)
                what = f"process {who['pid']} on {who['host']} since {who['since']} ({who['command']})"
            except (ValueError, KeyError, TypeError):
                what = "another process"
            raise MtnasError(
                f"the run folder {folder} is in use by {what}. Wait until it ends (rerun then to continue "
                f"it), or start this run in another folder (hydra.run.dir=...)."
            ) from None
        stale = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if stale:
            log.info("run folder: taking over the lock of an ended run (%s)", stale)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv[1:])[:500],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # ended normally (or by an exception): nobody to report next time
    finally:
        os.close(fd)  # releases the lock


def unit_seed(seed: int, *parts: object) -> int:
    """A seed of its own for `parts` (a unit, an epoch), stable across processes and Python versions."""
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class EpochSeed(pl.Callback):
    """At the start of each training epoch: tells the data module the epoch (its data order and augmentation
    are drawn from (seed, epoch, sample) alone, in any data worker) and reseeds everything else from
    (`seed`, unit, epoch): a run resumed from `last.ckpt` after epoch k draws exactly what the uninterrupted
    run drew in epoch k + 1."""

    def __init__(self, seed: int, unit: str):
        self.seed, self.unit = seed, unit

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # Persistent data workers may start on the next epoch's batches before its start hook runs.
        if hasattr(trainer.datamodule, "set_epoch"):
            trainer.datamodule.set_epoch(trainer.current_epoch + 1)

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if hasattr(trainer.datamodule, "set_epoch"):
            trainer.datamodule.set_epoch(trainer.current_epoch)
        pl.seed_everything(
            unit_seed(self.seed, self.unit, "epoch", trainer.current_epoch), workers=True, verbose=False
        )


def quiet_wandb() -> None:
    """wandb's per-run banners and summaries would interleave with the progress bars; the run folder and
    the sync command are printed once, with the results."""
    os.environ.setdefault("WANDB_SILENT", "true")


def close_logger(logger) -> None:
    if logger and type(logger).__name__ == "WandbLogger" and rank_zero_only.rank == 0:
        import wandb

        wandb.finish()


def checkpoint_callbacks(dirpath: Path, monitor: str | None, mode: str) -> list[ModelCheckpoint]:
    """`last.ckpt` after every epoch (what a rerun resumes from), plus `best.ckpt` by `monitor` when given,
    as `[best, last]` (the first one's `best_model_path` is the checkpoint to use). Two callbacks: Lightning's
    `save_last` writes nothing without a top-k save (e.g. a supernet). `best` runs first, so the `last.ckpt`
    of an epoch holds the best score including that epoch: a run resumed from it keeps the best checkpoint
    an uninterrupted run would keep (saved the other way round, a resume after the epoch that set the best
    forgot it, and the next epoch replaced best.ckpt whatever its score)."""
    last = ModelCheckpoint(dirpath=dirpath, filename="last", save_top_k=1, enable_version_counter=False)
    if monitor is None:
        return [last]
    best = ModelCheckpoint(
        dirpath=dirpath,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    return [best, last]


def _brief(val: dict[str, Any]) -> str:
    """`task metric=value, …` from nested val metrics: one line for the run log."""
    parts = [
        f"{task} " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        if isinstance(metrics, dict)
        else f"{task}={metrics:.4g}"
        for task, metrics in val.items()
    ]
    return "; ".join(parts)


def _wiring(value: Any) -> bool:
    """A method's setting that only points at another key (`method.space: ${space}`): compared there."""
    return isinstance(value, str) and value.startswith("${") and value.endswith("}")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` → `{"a.b": 1}`: configs compared key by key."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
