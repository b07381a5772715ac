"""The plan of a run: single-task baselines → the method's stages → evaluate (DESIGN.md §1–2).

    baselines/<task>/{best,last}.ckpt, fit.json   single-task models (reference for Δm)
    baselines/baselines.json                      reference metrics, and where they came from
    <the method's stage folders>                  e.g. train/ (static); supernet/, search/, retrain/ (one-shot)
    results.json, report.md, pareto.png           test metrics, params, FLOPs, latency, Δm; Pareto front

The method (`method._target_`) says which stages it adds and runs them; this loop knows none of them. Every
training run is skipped when its `fit.json` exists and resumes from its `last.ckpt` when interrupted, so
rerunning a command in the same folder (`hydra.run.dir=...`) continues where it stopped.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from mtnas.methods.base import Method, build_method
from mtnas.metrics.delta_m import delta_m
from mtnas.run import Run, Unit


def stage_plan(stage: str, method: Method) -> tuple[str, ...]:
    if stage == "all":
        return ("baselines", *method.stages, "evaluate")
    return (stage,)


class Pipeline:
    def __init__(self, cfg: DictConfig, method: Method | None = None):
        self.cfg = cfg
        self.method = method or build_method(cfg)
        self.run = Run(cfg, self.method)

    def __call__(self) -> float | None:
        with self.run.locked():  # one process per run folder
            return self._plan()

    def _plan(self) -> float | None:
        run, method = self.run, self.method
        pl.seed_everything(run.seed, workers=True, verbose=False)
        plan = stage_plan(self.cfg.stage, method)
        run.check_trained_tasks(method.trained_dirs(run))  # a folder continued with other tasks: refused
        run.dm.prepare_data()
        run.dm.setup()  # reads every split's layout and first sample: bad data fails before training
        method.check(run, plan)  # what would otherwise fail after hours: budgets, files, weights
        run.keep_config_history()  # after the checks: an invocation refused there did nothing
        if "baselines" in plan:
            run.baselines = self.baselines_stage()
        for stage in (*method.stages, *method.optional_stages):
            if stage in plan:
                method.run_stage(stage, run)
        if "evaluate" in plan:
            return self.evaluate_stage()
        return None

    def baselines_stage(self) -> dict[str, Any]:
        run = self.run
        if not run.owns_baselines:
            return run.load_baselines(required=True)
        if self.cfg.baselines.source == "config":
            ref = run.config_baselines()
        else:
            model = self.method.baseline_model(run)
            fits = {u.tasks[0]: run.fit(u, run.lit_module(u, model)) for u in run.baseline_units}
            ref = {"source": "run", "val": {t: f["val"][t] for t, f in fits.items()}}
        run.write_json(run.baselines_dir / "baselines.json", ref)
        return run.check_baselines(ref)

    def evaluate_stage(self) -> float:
        run, method = self.run, self.method
        from_run = self.cfg.baselines.source == "run"
        baselines = run.load_baselines(required=from_run)
        final = run.multitask_unit(method.final_folder)
        references = [
            Unit(name, folder, tuple(run.tasks)) for name, folder in method.reference_folders(run).items()
        ]
        units = [*(run.baseline_units if from_run else []), final, *references]
        models = {unit.name: run.test(unit) for unit in units}
        if from_run:
            ref_test = {u.tasks[0]: models[u.name]["test"][u.tasks[0]] for u in run.baseline_units}
        else:
            ref_test = baselines["test"]
        dirs = {t: task.delta_m_directions for t, task in run.task_objs.items()}
        conv = self.cfg.delta_m.convention
        for unit in (final, *references):
            mtl = models[unit.name]
            mtl["delta_m_per_task"] = delta_m(mtl["test"], ref_test, dirs, "per_task")
            mtl["delta_m_per_metric"] = delta_m(mtl["test"], ref_test, dirs, "per_metric")
            mtl["delta_m"] = mtl[f"delta_m_{conv}"]
        search = method.summary(run)
        results = {
            **({"search": search} if search is not None else {}),
            "method": method.name,
            "experiment": self.cfg.experiment_name,
            "dataset": self.cfg.data.name,
            "tasks": run.tasks,
            "baselines_source": baselines["source"] if baselines else "config",
            **({} if run.owns_baselines else {"baselines_dir": str(run.baselines_dir)}),
            "baselines_test": ref_test,
            "delta_m_convention": conv,
            "delta_m_metrics": {t: list(d) for t, d in dirs.items()},
            "models": models,
            **({"references": [u.name for u in references]} if references else {}),
        }
        run.write_json(run.out / "results.json", results)
        if run.is_writer:
            self._report(results)
        return mtl["delta_m"]

    def _report(self, results: dict[str, Any]) -> None:
        from mtnas.report.tables import print_results, results_markdown

        run = self.run
        run.write_text(run.out / "report.md", results_markdown(results, run.task_objs))
        self.method.report(run, results)
        print_results(results, run.task_objs)
        mtl = results["models"]["multitask"]
        run.announce(
            f"evaluate: multitask test Δm {mtl['delta_m']:+.2f} % ({results['delta_m_convention']}), "
            f"{mtl['params'] / 1e6:.3f} M params, {mtl['flops'] / 1e9:.4g} GFLOPs"
        )
        if self.cfg.logger.name == "wandb":
            self._log_results_to_wandb(results)
        run.announce(f"Run folder: {run.out} (results.json, report.md)")
        if self.cfg.logger.name == "wandb" and self.cfg.logger.offline:
            run.announce(f"wandb runs are offline; upload with: wandb sync {run.out / 'wandb'}/offline-run-*")

    def _log_results_to_wandb(self, results: dict[str, Any]) -> None:
        import wandb

        from mtnas.report.tables import results_rows
        from mtnas.run import quiet_wandb

        quiet_wandb()
        run = self.run
        header, rows = results_rows(results, run.task_objs)
        wb = wandb.init(
            dir=str(run.out),
            project=self.cfg.logger.project,
            entity=self.cfg.logger.entity,
            mode="offline" if self.cfg.logger.offline else "online",
            name=f"{self.cfg.experiment_name}/evaluate",
            group=f"{self.cfg.experiment_name}/{run.out.name}",
            job_type="evaluate",
        )
        wb.log({"results": wandb.Table(columns=header, data=rows), **self.method.wandb_tables(run, wandb)})
        wb.summary["delta_m"] = results["models"]["multitask"]["delta_m"]
        wb.finish()


def run(cfg: DictConfig, method: Method | None = None) -> float | None:
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
    return Pipeline(cfg, method)()
