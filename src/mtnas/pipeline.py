"""The stages of a run, in order, with artifacts between them (DESIGN.md §1).

    baselines/<task>/{best,last}.ckpt, fit.json   single-task models (reference for Δm)
    baselines/baselines.json                      reference metrics, and where they came from
    train/{best,last}.ckpt, fit.json              the multi-task model (static pipeline), or with a `space`:
    supernet/last.ckpt, fit.json                  the weight-sharing supernet (sandwich rule)
    search/population.jsonl, search/pareto.json   every evaluated subnet; the non-dominated ones
    arch.yaml                                     the chosen subnet (readable, editable, retrainable)
    retrain/{best,last}.ckpt, fit.json            the chosen subnet trained as a plain static model
    results.json, report.md, pareto.png           test metrics, params, FLOPs, Δm, Pareto front

Every training run is skipped when its `fit.json` exists and resumes from its `last.ckpt` when
interrupted, so rerunning a command in the same folder (`hydra.run.dir=...`) continues where it stopped.
Under DDP every process runs this same sequence (Lightning needs each Trainer call on every rank);
only rank 0 writes files, and values needed later are held in memory on all ranks rather than read
back from files another rank may not have finished writing.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from mtnas.data.datamodule import MultiTaskDataModule
from mtnas.errors import ConfigError, MtnasError
from mtnas.lit.multitask import MultiTaskLitModule, nested_metrics
from mtnas.metrics.delta_m import check_baselines, delta_m
from mtnas.search.cost import count_flops, count_params, measure_latency
from mtnas.tasks import build_tasks
from mtnas.utils.io import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

STATIC_PLAN = ("baselines", "train", "evaluate")
NAS_PLAN = ("baselines", "supernet", "search", "retrain", "evaluate")


def stage_plan(stage: str, nas: bool) -> tuple[str, ...]:
    if stage == "all":
        return NAS_PLAN if nas else STATIC_PLAN
    return (stage,)


@dataclass(frozen=True)
class Unit:
    """One model trained by the pipeline: a single-task baseline or the multi-task model."""

    name: str
    dir: Path
    tasks: tuple[str, ...]


class Pipeline:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.out = Path(cfg.paths.output_dir)
        self.tasks = list(cfg.tasks)
        self.available = OmegaConf.to_container(cfg.data.available_tasks, resolve=True)
        self.task_objs = build_tasks(self.tasks, self.available)
        self.dm = MultiTaskDataModule(
            OmegaConf.to_container(cfg.data, resolve=True),
            self.tasks,
            cache_dir=cfg.paths.cache_dir,
            progress=rank_zero_only.rank == 0,
        )
        self.baselines_dir = self._find_baselines_dir()
        self.baseline_units = [Unit(f"baseline/{t}", self.baselines_dir / t, (t,)) for t in self.tasks]
        self.nas = cfg.get("space") is not None
        self.mtl_unit = Unit("multitask", self.out / ("retrain" if self.nas else "train"), tuple(self.tasks))
        if self.nas:
            from mtnas.nas import NAS

            self.nas_stages = NAS(self)

    # -- stages ---------------------------------------------------------------------------------------
    def run(self) -> float | None:
        pl.seed_everything(int(self.cfg.seed), workers=True, verbose=False)
        plan = stage_plan(self.cfg.stage, self.nas)
        self._check_trained_tasks()  # a folder continued with other tasks: refused before any work
        self.dm.prepare_data()
        self.dm.setup()  # reads every split's layout and first sample: bad data fails before training
        if self.nas:
            self.nas_stages.check_before_training(plan)  # budget, timm weights
        self._keep_config_history()  # after the checks: an invocation refused there did nothing
        baselines = None
        if "baselines" in plan:
            baselines = self.baselines_stage()
        if "train" in plan:
            self.fit(self.mtl_unit, self._module(self.mtl_unit, self._baselines_val(baselines)))
        if "supernet" in plan:
            self.nas_stages.train_supernet(self._baselines_val(baselines))
        arch = None  # held in memory: other DDP ranks must not read arch.yaml before rank 0 wrote it
        if "search" in plan:
            arch = self.nas_stages.search(baselines or self.load_baselines(required=True))
        if "retrain" in plan:
            self.nas_stages.retrain(self._baselines_val(baselines), arch)
        if "evaluate" in plan:
            return self.evaluate_stage()
        return None

    def _baselines_val(self, baselines: dict | None) -> dict | None:
        return (baselines or self.load_baselines(required=False) or {}).get("val")

    # Keys that select what a rerun does, not what it trains: they may change freely between reruns.
    RERUN_KEYS = ("stage", "supernet_ckpt", "arch", "trainer.enable_progress_bar")

    def _keep_config_history(self) -> None:
        """Hydra rewrites `.hydra/config.yaml` on every run in a folder; keep each invocation's copy in
        `.hydra/history/NNN/`, and warn when a rerun changes the settings the folder was first run with."""
        hydra_dir = self.out / ".hydra"
        if rank_zero_only.rank != 0 or not (hydra_dir / "config.yaml").exists():
            return
        history = sorted((hydra_dir / "history").glob("[0-9]*/config.yaml"))
        dest = hydra_dir / "history" / f"{len(history) + 1:03d}"
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "overrides.yaml"):
            if (hydra_dir / name).exists():
                atomic_write_text(dest / name, (hydra_dir / name).read_text())
        if history:
            before = _flat(OmegaConf.to_container(OmegaConf.load(history[0])))
            now = _flat(OmegaConf.to_container(OmegaConf.load(hydra_dir / "config.yaml")))
            changed = sorted(
                k
                for k in before.keys() | now.keys()
                if before.get(k) != now.get(k) and not k.startswith(self.RERUN_KEYS)
            )
            if changed:
                log.warning(
                    "This folder was first run with other settings (%s%s; that config is in %s). "
                    "Finished stages are reused as they are, not retrained; use a new folder to train "
                    "with the new settings.",
                    ", ".join(f"{k}: {before.get(k)!r} → {now.get(k)!r}" for k in changed[:6]),
                    ", …" if len(changed) > 6 else "",
                    history[0].parent,
                )

    # -- inputs that come from other run folders ----------------------------------------------------
    SOURCES = "sources.json"  # {"baselines": dir, "supernet": ckpt} this run reuses from other run folders

    def sources(self, run_dir: Path | None = None) -> dict[str, str]:
        path = (run_dir or self.out) / self.SOURCES
        return read_json(path) if path.exists() else {}

    def record_source(self, kind: str, path: Path) -> None:
        """Remember a reused input, so later stages in this folder (and runs given this folder's files)
        find it without the command-line argument that named it."""
        if rank_zero_only.rank == 0 and self.sources().get(kind) != str(path):
            atomic_write_json(self.out / self.SOURCES, {**self.sources(), kind: str(path)})

    def linked_runs(self) -> list[Path]:
        """Run folders that `supernet_ckpt=` and `arch=` come from (their files sit in the run folder)."""
        runs = []
        if self.cfg.get("supernet_ckpt"):
            runs.append(Path(str(self.cfg.supernet_ckpt)).expanduser().resolve().parent.parent)
        if self.cfg.get("arch"):
            arch_dir = Path(str(self.cfg.arch)).expanduser().resolve().parent
            runs.append(
                arch_dir.parent if arch_dir.name == "retrain" else arch_dir
            )  # a run's retrain/arch.yaml
        return [r for r in runs if r != self.out.resolve()]

    def find_input(self, kind: str, relative: str, marker: str = "") -> Path | None:
        """An input reused from elsewhere: as this folder recorded it, else `relative` in a linked run
        folder, else what that folder reused itself. A candidate counts when `candidate/marker` exists."""
        candidates = [self.sources().get(kind)]
        for run_dir in self.linked_runs():
            candidates += [run_dir / relative, self.sources(run_dir).get(kind)]
        return next((Path(c) for c in candidates if c and (Path(c) / marker).exists()), None)

    def _find_baselines_dir(self) -> Path:
        """This run's `baselines/`, unless only the run that `supernet_ckpt=` or `arch=` comes from has them
        (or the run that one reused them from): a search or retrain started in a new folder reuses those
        single-task baselines (never retrains or rewrites them)."""
        own = self.out / "baselines"
        if (own / "baselines.json").exists() or self.cfg.baselines.source != "run":
            return own
        found = self.find_input("baselines", "baselines", marker="baselines.json")
        if found is None or found.resolve() == own.resolve():
            return own
        self._announce(f"baselines: reusing {found} (from another run folder; recorded in sources.json)")
        self.record_source("baselines", found)
        return found

    @property
    def _own_baselines(self) -> bool:
        return self.baselines_dir == self.out / "baselines"

    def baselines_stage(self) -> dict[str, Any]:
        if not self._own_baselines:
            return read_json(self.baselines_dir / "baselines.json")
        if self.cfg.baselines.source == "config":
            metrics = OmegaConf.to_container(self.cfg.baselines.metrics, resolve=True)
            ref = {"source": "config", "val": metrics, "test": metrics}
        else:
            fits = {u.tasks[0]: self.fit(u, self._module(u, None)) for u in self.baseline_units}
            ref = {"source": "run", "val": {t: f["val"][t] for t, f in fits.items()}}
        self._write_json(self.baselines_dir / "baselines.json", ref)
        self._check_baselines(ref)
        return ref

    def _check_baselines(self, ref: dict[str, Any]) -> dict[str, Any]:
        """A baseline metric of 0 makes Δm undefined: say so now, not after the supernet has trained."""
        check_baselines(ref["val"], {t: task.delta_m_directions for t, task in self.task_objs.items()})
        return ref

    def load_baselines(self, required: bool) -> dict[str, Any] | None:
        if self.cfg.baselines.source == "config":
            metrics = OmegaConf.to_container(self.cfg.baselines.metrics, resolve=True)
            return {"source": "config", "val": metrics, "test": metrics}
        path = self.baselines_dir / "baselines.json"
        if path.exists():
            return self._check_baselines(read_json(path))
        if required:
            raise MtnasError(
                f"{path} is missing: run the baselines stage first (stage=baselines or stage=all) in this "
                "folder or in the run that supernet_ckpt=/arch= come from, or give reference numbers with "
                "baselines.source=config and baselines.metrics={task: {metric: value}}."
            )
        return None

    def fit(self, unit: Unit, module: pl.LightningModule, max_epochs: int | None = None) -> dict[str, Any]:
        """Train `module` into `unit.dir` (skipped when done, resumed from last.ckpt when interrupted).
        Modules with a `monitor` also keep best.ckpt; the others (the supernet) keep last.ckpt only."""
        done, last = unit.dir / "fit.json", unit.dir / "last.ckpt"
        if done.exists():
            info = read_json(done)
            self._check_same_tasks(unit, info.get("tasks"), done)
            self._announce(f"{unit.name}: already trained ({done}), skipping")
            return info
        resumed_after = None
        if last.exists():
            state = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
            self._check_same_tasks(unit, (state.get("hyper_parameters") or {}).get("tasks"), last)
            resumed_after = int(state.get("epoch", 0)) + 1
            del state
        monitor, mode = getattr(module, "monitor", (None, "min"))
        callbacks = checkpoint_callbacks(unit.dir, monitor, mode)
        logger = self._logger(unit)
        unused = getattr(module, "uses_weight_subsets", False)
        trainer = self._trainer(unit, callbacks, logger, max_epochs, unused_parameters=unused)
        if resumed_after is not None:
            self._announce(f"{unit.name}: resuming from {last} ({resumed_after} epoch(s) done)")
        else:
            self._announce(f"{unit.name}: training on {list(unit.tasks)} → {unit.dir}")
        started = time.perf_counter()
        trainer.fit(module, datamodule=self.dm, ckpt_path=str(last) if last.exists() else None)
        best = callbacks[-1].best_model_path or str(last)
        val = trainer.validate(module, datamodule=self.dm, ckpt_path=best, verbose=False)
        info = {
            "unit": unit.name,
            "tasks": list(unit.tasks),
            "val": nested_metrics(val[0], "val") or {k: float(v) for k, v in val[0].items()},
            "best_ckpt": Path(best).name,
            "monitor": monitor,
            "epochs": trainer.current_epoch,
        }
        self._write_json(done, info)
        self._close_logger(logger)
        self._announce(
            f"{unit.name}: {info['epochs']} epoch(s) in {time.perf_counter() - started:.0f} s; "
            f"val {_brief(info['val'])} ({info['best_ckpt']})"
        )
        return info

    def _check_trained_tasks(self) -> None:
        """The multi-task model (and supernet) already in this folder must be for this run's tasks."""
        dirs = [self.mtl_unit.dir] + ([self.nas_stages.supernet_dir] if self.nas else [])
        for d in dirs:
            if (d / "fit.json").exists():
                self._check_same_tasks(self.mtl_unit, read_json(d / "fit.json").get("tasks"), d / "fit.json")
            elif (d / "last.ckpt").exists():
                state = torch.load(d / "last.ckpt", map_location="cpu", weights_only=False, mmap=True)
                tasks = (state.get("hyper_parameters") or {}).get("tasks")
                self._check_same_tasks(self.mtl_unit, tasks, d / "last.ckpt")

    def _check_same_tasks(self, unit: Unit, trained: list[str] | None, path: Path) -> None:
        """A run folder continued with other `tasks` must not mix models trained for different tasks."""
        if trained is not None and sorted(trained) != sorted(unit.tasks):
            raise ConfigError(
                "tasks",
                f"{path} was trained on tasks {list(trained)} but this run's tasks are {list(unit.tasks)}. "
                f"Continue this run folder with tasks=[{','.join(trained)}], or start a new one "
                "(a new hydra.run.dir) for these tasks.",
            )

    def evaluate_stage(self) -> float | None:
        baselines = self.load_baselines(required=self.cfg.baselines.source == "run")
        units = (self.baseline_units if self.cfg.baselines.source == "run" else []) + [self.mtl_unit]
        models: dict[str, dict[str, Any]] = {}
        for unit in units:
            models[unit.name] = self.test(unit)
        if self.cfg.baselines.source == "run":
            ref_test = {u.tasks[0]: models[u.name]["test"][u.tasks[0]] for u in self.baseline_units}
        else:
            ref_test = baselines["test"]
        dirs = {t: task.delta_m_directions for t, task in self.task_objs.items()}
        conv = self.cfg.delta_m.convention
        mtl = models[self.mtl_unit.name]
        mtl["delta_m_per_task"] = delta_m(mtl["test"], ref_test, dirs, "per_task")
        mtl["delta_m_per_metric"] = delta_m(mtl["test"], ref_test, dirs, "per_metric")
        mtl["delta_m"] = mtl[f"delta_m_{conv}"]
        results = {
            **({"search": self.nas_stages.summary()} if self.nas else {}),
            "experiment": self.cfg.experiment_name,
            "dataset": self.cfg.data.name,
            "tasks": self.tasks,
            "baselines_source": baselines["source"] if baselines else "config",
            **({} if self._own_baselines else {"baselines_dir": str(self.baselines_dir)}),
            "baselines_test": ref_test,
            "delta_m_convention": conv,
            "delta_m_metrics": {t: list(d) for t, d in dirs.items()},
            "models": models,
        }
        self._write_json(self.out / "results.json", results)
        if rank_zero_only.rank == 0:
            from mtnas.report.tables import print_results, results_markdown

            atomic_write_text(self.out / "report.md", results_markdown(results, self.task_objs))
            if self.nas:
                self.nas_stages.plot_pareto(results)
            print_results(results, self.task_objs)
            self._announce(
                f"evaluate: {self.mtl_unit.name} test Δm {mtl['delta_m']:+.2f} % ({conv}), "
                f"{mtl['params'] / 1e6:.3f} M params, {mtl['flops'] / 1e9:.4g} GFLOPs"
            )
            self._log_results_to_wandb(results)
            self._announce(f"Run folder: {self.out} (results.json, report.md)")
            if self.cfg.logger.name == "wandb" and self.cfg.logger.offline:
                self._announce(
                    f"wandb runs are offline; upload with: wandb sync {self.out / 'wandb'}/offline-run-*"
                )
        return mtl["delta_m"]

    def test(self, unit: Unit) -> dict[str, Any]:
        best = unit.dir / "best.ckpt"
        ckpt = best if best.exists() else unit.dir / "last.ckpt"
        if not ckpt.exists():
            raise MtnasError(
                f"{unit.dir} has no best.ckpt or last.ckpt for {unit.name}: run the training stages first "
                f"(stage=all), or point hydra.run.dir at the run folder that holds them."
            )
        module = MultiTaskLitModule.load_from_checkpoint(ckpt, map_location="cpu")
        trainer = self._trainer(unit, [], logger=False)
        res = trainer.test(module, datamodule=self.dm, verbose=False)
        size = self.dm.image_size
        return {
            "tasks": list(unit.tasks),
            "checkpoint": str(ckpt.relative_to(self.out) if ckpt.is_relative_to(self.out) else ckpt),
            "test": nested_metrics(res[0], "test"),
            "params": count_params(module.model),
            "flops": count_flops(module.model, size),
            "latency_ms": self.latency(module.model),
        }

    # -- helpers ----------------------------------------------------------------------------------------
    def latency(self, model) -> float:
        """Median eval-mode forward time (ms) on the device the run trains on (`latency` config)."""
        lcfg = self.cfg.latency
        use_cuda = torch.cuda.is_available() and self.cfg.trainer.accelerator != "cpu"
        return measure_latency(
            model,
            self.dm.image_size,
            int(lcfg.batch_size),
            "cuda" if use_cuda else "cpu",
            int(lcfg.warmup),
            int(lcfg.repeats),
        )

    def _module(
        self, unit: Unit, baselines_val: dict | None, model: dict | None = None
    ) -> MultiTaskLitModule:
        if model is None:
            model = (
                self.nas_stages.baseline_model()
                if self.nas
                else OmegaConf.to_container(self.cfg.model, resolve=True)
            )
        return MultiTaskLitModule(
            tasks=list(unit.tasks),
            available_tasks=self.available,
            model=model,
            optim=OmegaConf.to_container(self.cfg.optim, resolve=True),
            loss=OmegaConf.to_container(self.cfg.loss, resolve=True),
            image_size=self.dm.image_size,
            baselines_val=baselines_val if len(unit.tasks) > 1 else None,
            delta_m_convention=self.cfg.delta_m.convention,
        )

    def _trainer(
        self,
        unit: Unit,
        callbacks: list,
        logger,
        max_epochs: int | None = None,
        unused_parameters: bool = False,
    ) -> pl.Trainer:
        kwargs = OmegaConf.to_container(self.cfg.trainer, resolve=True)
        if max_epochs is not None:
            kwargs["max_epochs"] = int(max_epochs)
        if unused_parameters and kwargs.get("strategy") == "ddp":
            # Each supernet step uses a subset of the weights (sampled archs): DDP must not wait for the rest.
            kwargs["strategy"] = "ddp_find_unused_parameters_true"
        progress = bool(kwargs.pop("enable_progress_bar", True))
        callbacks = list(callbacks)
        if progress:
            from pytorch_lightning.callbacks import RichProgressBar

            callbacks.append(RichProgressBar(leave=True))
        return pl.Trainer(
            **kwargs,
            callbacks=callbacks,
            logger=logger,
            default_root_dir=str(unit.dir),
            enable_progress_bar=progress,
            enable_model_summary=False,
        )

    def _logger(self, unit: Unit):
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

        # wandb's per-run banners and summaries would interleave with the progress bars; the run folder
        # and the sync command are printed once, with the results.
        os.environ.setdefault("WANDB_SILENT", "true")
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

    @staticmethod
    def _close_logger(logger) -> None:
        if logger and type(logger).__name__ == "WandbLogger" and rank_zero_only.rank == 0:
            import wandb

            wandb.finish()

    def _log_results_to_wandb(self, results: dict[str, Any]) -> None:
        if self.cfg.logger.name != "wandb":
            return
        import wandb

        from mtnas.report.tables import results_rows

        header, rows = results_rows(results, self.task_objs)
        run = wandb.init(
            dir=str(self.out),
            project=self.cfg.logger.project,
            entity=self.cfg.logger.entity,
            mode="offline" if self.cfg.logger.offline else "online",
            name=f"{self.cfg.experiment_name}/evaluate",
            group=f"{self.cfg.experiment_name}/{self.out.name}",
            job_type="evaluate",
        )
        tables = {"results": wandb.Table(columns=header, data=rows)}
        if self.nas:
            tables.update(self.nas_stages.wandb_tables(wandb))
        run.log(tables)
        run.summary["delta_m"] = results["models"][self.mtl_unit.name]["delta_m"]
        run.finish()

    def _write_json(self, path: Path, obj: Any) -> None:
        if rank_zero_only.rank == 0:
            atomic_write_json(path, obj)

    @staticmethod
    def _announce(text: str) -> None:
        # Through logging, so the run folder's cli.log keeps a timestamped record of every stage.
        if rank_zero_only.rank == 0:
            log.info(text)


def checkpoint_callbacks(dirpath: Path, monitor: str | None, mode: str) -> list[ModelCheckpoint]:
    """`last.ckpt` after every epoch (what a rerun resumes from), plus `best.ckpt` by `monitor` when given.
    Two callbacks: Lightning's `save_last` writes nothing without a top-k save (e.g. the supernet)."""
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
    return [last, best]


def _brief(val: dict[str, Any]) -> str:
    """`task metric=value, …` from nested val metrics: one line for the run log."""
    parts = [
        f"{task} " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        if isinstance(metrics, dict)
        else f"{task}={metrics:.4g}"
        for task, metrics in val.items()
    ]
    return "; ".join(parts)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` → `{"a.b": 1}`: configs compared key by key."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def run(cfg: DictConfig) -> float | None:
    """Run the configured stages; returns the multi-task model's test Δm when evaluated (for sweepers)."""
    # Lightning's per-Trainer INFO lines (device summary, tips, checkpoint restores) drown the progress
    # output when a run builds a dozen Trainers; warnings still show.
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Checkpoints share the unit folder with the CSV log by design; say nothing about it.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # Epoch-level metrics are torchmetrics objects, already synced across processes in compute().
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.*sync_dist=True")
    return Pipeline(cfg).run()
