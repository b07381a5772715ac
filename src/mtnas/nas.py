"""The NAS stages of the pipeline: supernet → search → retrain (AutoTaskFormer-style, ViT space).

Kept beside `pipeline.py` (which owns units, trainers, loggers and artifacts) so the static pipeline
reads on its own; `Pipeline` calls these when the config has a `space`.
"""

from __future__ import annotations

import random
import time
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from omegaconf import OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from mtnas.errors import ConfigError, MtnasError
from mtnas.search.budget import Budget, sample_within
from mtnas.search.cost import measure_latency, vit_arch_flops, vit_arch_params
from mtnas.search.evaluator import SubnetEvaluator, spread_across_processes
from mtnas.search.evolution import EvolutionConfig, EvolutionSearch, RandomSearch
from mtnas.search.population import PopulationLog, pareto_front
from mtnas.space import ViTArch, ViTSpace
from mtnas.tasks import image_level
from mtnas.utils.io import atomic_write_json, atomic_write_text, read_json

if TYPE_CHECKING:
    from mtnas.pipeline import Pipeline

SEARCHERS = ("evolution", "random")


class NAS:
    def __init__(self, pipeline: Pipeline):
        self.p = pipeline
        cfg = pipeline.cfg
        self.cfg = cfg
        self.space = ViTSpace.from_config(OmegaConf.to_container(cfg.space, resolve=True), pipeline.tasks)
        self.budget = Budget.from_config(
            OmegaConf.to_container(cfg.budget, resolve=True) if cfg.get("budget") else None
        )
        self.patch_size = int(cfg.supernet.patch_size)
        self.out_channels = {t: task.out_channels for t, task in pipeline.task_objs.items()}
        self.image_level = image_level(pipeline.task_objs)
        self.supernet_dir = pipeline.out / "supernet"
        self.search_dir = pipeline.out / "search"
        self.arch_path = pipeline.out / "arch.yaml"
        self._latency = None

    @property
    def device(self) -> torch.device:
        """Where search evaluates candidates and latency is measured."""
        use_cuda = torch.cuda.is_available() and self.cfg.trainer.accelerator != "cpu"
        return torch.device("cuda" if use_cuda else "cpu")

    @property
    def measures_latency(self) -> bool:
        return self.budget.limits_latency or bool(self.cfg.latency.get("in_search", False))

    # -- cost ---------------------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.p.dm.image_size
        return h // self.patch_size, w // self.patch_size

    def cost(self, arch: ViTArch) -> dict[str, float]:
        """Analytic params and FLOPs; plus measured `latency_ms` when the budget limits it (or
        `latency.in_search=true`), timed once per arch and device and cached in the cache folder."""
        cost = self.analytic_cost(arch)
        if self.measures_latency:
            cost["latency_ms"] = self.latency(arch)
        return cost

    def analytic_cost(self, arch: ViTArch) -> dict[str, float]:
        return dict(
            _cost(
                arch,
                tuple(self.p.tasks),
                tuple(sorted(self.out_channels.items())),
                self.grid,
                self.patch_size,
                self.space.head_dim,
                tuple(sorted(self.image_level)),
            )
        )

    def latency(self, arch: ViTArch) -> float:
        from mtnas.search.latency import LatencyTable
        from mtnas.search.population import arch_key
        from mtnas.supernet import StaticMultiTaskViT

        lcfg = self.cfg.latency
        size = self.p.dm.image_size
        if self._latency is None:
            self._latency = LatencyTable(
                Path(self.cfg.paths.cache_dir) / "latency.json", self.device, int(lcfg.batch_size), size
            )

        def measure() -> float:
            # Latency does not depend on the weights: a fresh static subnet of this arch is timed.
            model = StaticMultiTaskViT.from_arch(
                arch,
                self.out_channels,
                size,
                self.patch_size,
                self.space.head_dim,
                image_level=self.image_level,
            )
            return measure_latency(
                model, size, int(lcfg.batch_size), self.device, int(lcfg.warmup), int(lcfg.repeats)
            )

        return self._latency(
            f"p{self.patch_size}|{sorted(self.out_channels.items())}|pooled{sorted(self.image_level)}|"
            f"{arch_key(arch.to_dict())}",
            measure,
        )

    def check_before_training(self, plan: tuple[str, ...]) -> None:
        """What would otherwise fail only after hours of training: a budget no arch of the space meets,
        timm weights that are not there."""
        self.check_budget(probe="search" in plan)
        spec = self.cfg.supernet.get("timm_init")
        if spec and "supernet" in plan and not (self.supernet_dir / "last.ckpt").exists():
            weights = Path(str(spec.checkpoint)).expanduser()
            if not weights.is_file():
                raise ConfigError("supernet.timm_init.checkpoint", f"weights file {weights} does not exist.")

    def check_budget(self, probe: bool = True) -> None:
        h, w = self.p.dm.image_size
        if h % self.patch_size or w % self.patch_size:
            raise ConfigError("supernet.patch_size", f"{self.patch_size} must divide the image size {h}×{w}.")
        self.budget.check_feasible(
            self.cost(self.space.smallest()), self.cost(self.space.largest(task_specific=True))
        )
        searched = (self.search_dir / "population.jsonl").exists() or self.arch_path.exists()
        if probe and not searched and self.budget.is_limited and not self.budget.limits_latency:
            # Each bound alone may be inside the space while the window they make holds no arch: the search
            # would find nothing. Analytic cost is cheap, so look (measured latency is too slow to look).
            rng, tries = random.Random(int(self.cfg.seed)), 2000
            if sample_within(lambda: self.space.sample(rng), self.analytic_cost, self.budget, tries) is None:
                raise ConfigError(
                    "budget",
                    f"no arch of the space meets {self.budget.describe()} ({tries} random archs tried): "
                    "widen the budget or the space.",
                )

    # -- models ---------------------------------------------------------------------------------------
    def subnet_model(self, arch: ViTArch) -> dict[str, Any]:
        return {"arch": arch.to_dict(), "patch_size": self.patch_size, "head_dim": self.space.head_dim}

    def baseline_model(self) -> dict[str, Any]:
        """Single-task baselines are the space's largest arch, trained alone (as in AutoTaskFormer)."""
        return self.subnet_model(self.space.largest())

    def _supernet_module(self, baselines_val):
        from mtnas.lit.supernet import SupernetLitModule

        return SupernetLitModule(
            tasks=self.p.tasks,
            available_tasks=self.p.available,
            space=OmegaConf.to_container(self.cfg.space, resolve=True),
            supernet=OmegaConf.to_container(self.cfg.supernet, resolve=True),
            optim=OmegaConf.to_container(self.cfg.optim, resolve=True),
            loss=OmegaConf.to_container(self.cfg.loss, resolve=True),
            image_size=self.p.dm.image_size,
            seed=int(self.cfg.seed),
            baselines_val=baselines_val,
            delta_m_convention=self.cfg.delta_m.convention,
        )

    def load_supernet(self):
        from mtnas.lit.checkpoint import load_checkpoint

        if self.cfg.get("supernet_ckpt"):
            module = load_checkpoint(self.cfg.supernet_ckpt, ("supernet",), "supernet_ckpt", self.p.tasks)
            self.p.record_source("supernet", Path(str(self.cfg.supernet_ckpt)).expanduser().resolve())
            return module
        own = self.supernet_dir / "last.ckpt"
        # This folder's supernet, else the one it (or the run arch= comes from) searched with supernet_ckpt=.
        for run_dir in [self.p.out, *self.p.linked_runs()]:
            path = self._supernet_of(run_dir)
            if path is not None:
                break
        else:
            raise MtnasError(
                f"supernet checkpoint {own} does not exist: train it first (stage=supernet or stage=all), "
                "pass supernet_ckpt=/path/to/supernet/last.ckpt, or retrain from scratch with "
                "retrain.init=scratch."
            )
        if path != own:
            self.p._announce(f"supernet: using {path} (from another run folder; recorded in sources.json)")
            self.p.record_source("supernet", path)
        return load_checkpoint(path, ("supernet",), tasks=self.p.tasks)

    def _supernet_of(self, run_dir: Path) -> Path | None:
        """A run folder's supernet: its own when trained to the end, else the one it recorded reusing,
        else its own partly trained one."""
        own = run_dir / "supernet" / "last.ckpt"
        recorded = self.p.sources(run_dir).get("supernet")
        if own.is_file() and (run_dir / "supernet" / "fit.json").exists():
            return own
        if recorded and Path(recorded).is_file():
            return Path(recorded)
        return own if own.is_file() else None

    # -- stages -----------------------------------------------------------------------------------------
    def train_supernet(self, baselines_val) -> dict[str, Any]:
        from mtnas.pipeline import Unit

        unit = Unit("supernet", self.supernet_dir, tuple(self.p.tasks))
        module = self._supernet_module(baselines_val)
        if self.cfg.supernet.get("timm_init") and not (unit.dir / "last.ckpt").exists():
            self.init_from_timm(module)
        return self.p.fit(unit, module, self.cfg.supernet.get("max_epochs"))

    def init_from_timm(self, module) -> None:
        """Start the supernet (largest shared arch, and every task copy) from local timm ViT weights.
        timm resamples the position embedding when the checkpoint was trained at another resolution."""
        import timm

        spec = self.cfg.supernet.timm_init
        path = Path(str(spec.checkpoint)).expanduser()
        if not path.is_file():
            raise ConfigError("supernet.timm_init.checkpoint", f"weights file {path} does not exist.")
        s = self.space
        try:
            vit = timm.create_model(
                spec.model,
                pretrained=True,
                pretrained_cfg_overlay={"file": str(path)},
                num_classes=0,
                img_size=self.p.dm.image_size,
                patch_size=self.patch_size,
                embed_dim=max(s.embed_dims),
                depth=max(s.depths),
                num_heads=max(s.num_heads),
                mlp_ratio=max(s.mlp_ratios),
            )
            module.net.load_timm_vit(vit)
        except (RuntimeError, ValueError, KeyError) as e:
            raise ConfigError(
                "supernet.timm_init",
                f"{path} does not fit the space's largest arch as a {spec.model}: {str(e).splitlines()[0]}",
            ) from None

    def search(self, baselines: dict[str, Any]) -> ViTArch:
        done = self.search_dir / "pareto.json"
        if done.exists() and self.arch_path.exists():
            self.p._announce(f"search: already done ({done}), skipping")
            return self.load_arch(self.arch_path)
        started = time.perf_counter()
        module = self.load_supernet()
        net = module.net.to(self.device).eval()
        limit = self.cfg.search.get("val_batches")
        self.p.dm.setup("validate")
        batches = [b for i, b in enumerate(self.p.dm.val_dataloader()) if limit is None or i < limit]
        evaluator = spread_across_processes(
            SubnetEvaluator(net, self.p.task_objs, batches, baselines["val"], self.cfg.delta_m.convention)
        )
        log = PopulationLog(self.search_dir / "population.jsonl", writable=rank_zero_only.rank == 0)
        already = len(log)
        rng = random.Random(int(self.cfg.seed))
        scfg = self.cfg.search
        with _progress(
            f"search ({scfg.name}), {len(log)} candidates already in the population log"
        ) as progress:
            args = (self.space, self.cost, self.budget, evaluator, log, rng, progress)
            if scfg.name == "evolution":
                EvolutionSearch(*args).run(
                    EvolutionConfig(
                        population=int(scfg.population),
                        top_k=int(scfg.top_k),
                        mutations=int(scfg.mutations),
                        crossovers=int(scfg.crossovers),
                        generations=int(scfg.generations),
                    )
                )
            else:
                RandomSearch(*args).run(int(scfg.num_candidates))
        records = [r for r in log.records.values() if self.budget.satisfied(r["cost"])]
        if not records:
            raise MtnasError("the search found no arch within the budget; widen `budget` or the space.")
        best = max(records, key=lambda r: r["delta_m"])
        arch = ViTArch.from_dict(best["arch"])
        if rank_zero_only.rank == 0:
            fronts = {
                k: pareto_front(records, k)
                for k in ("params", "flops", "latency_ms")
                if all(k in r["cost"] for r in records)
            }
            atomic_write_json(done, fronts)
            header = (
                f"# Chosen by {scfg.name} search: val Δm {best['delta_m']:+.2f} %, "
                f"{best['cost']['params'] / 1e6:.3f} M params, {best['cost']['flops'] / 1e9:.4f} GFLOPs.\n"
                "# Edit freely and retrain with: stage=retrain arch=<this file>\n"
            )
            atomic_write_text(self.arch_path, header + yaml.safe_dump(arch.to_dict(), sort_keys=False))
            self.plot_pareto()
        self.p._announce(
            f"search: {len(log)} subnets evaluated ({len(log) - already} new) in "
            f"{time.perf_counter() - started:.0f} s, "
            f"{len(records)} within the budget; chosen {arch.describe()} (val Δm {best['delta_m']:+.2f} %) "
            f"→ {self.arch_path}"
        )
        return arch

    def load_arch(self, path: str | Path) -> ViTArch:
        return self.space.require(ViTArch.read(path), path)

    def retrain(self, baselines_val, searched: ViTArch | None = None) -> dict[str, Any]:
        """Retrain `arch=` when given, else the arch the search just chose, else the run's arch.yaml."""
        if self.cfg.get("arch"):
            arch = self.load_arch(self.cfg.arch)
        else:
            arch = searched or self.load_arch(self.arch_path)
        unit = self.p.mtl_unit
        if rank_zero_only.rank == 0 and not (unit.dir / "fit.json").exists():
            # A record beside the weights of exactly what was trained (arch= files may change later).
            atomic_write_text(unit.dir / "arch.yaml", yaml.safe_dump(arch.to_dict(), sort_keys=False))
        module = self.p._module(unit, baselines_val, model=self.subnet_model(arch))
        init = self.cfg.retrain.init
        if init == "inherited" and not (unit.dir / "last.ckpt").exists():
            module.model.load_state_dict(self.load_supernet().net.extract(arch).state_dict())
        return self.p.fit(unit, module, self.cfg.retrain.get("max_epochs"))

    # -- reporting --------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        pareto = self.search_dir / "pareto.json"
        # What was evaluated: the retrained model's record first, else what a retrain would train.
        trained = self.p.mtl_unit.dir / "arch.yaml"
        candidates = [
            trained,
            Path(str(self.cfg.arch)).expanduser() if self.cfg.get("arch") else self.arch_path,
        ]
        arch_file = next((f for f in candidates if f.exists()), None)
        log = PopulationLog(self.search_dir / "population.jsonl")
        arch = self.load_arch(arch_file).to_dict() if arch_file else None
        searched = log.get(arch) if arch else None  # None for a hand-written arch never evaluated
        return {
            "arch": arch,
            "arch_file": str(
                arch_file.relative_to(self.p.out) if arch_file.is_relative_to(self.p.out) else arch_file
            )
            if arch_file
            else None,
            "searched": {"delta_m": searched["delta_m"], "cost": searched["cost"]} if searched else None,
            "evaluated": len(log),
            "pareto_params": read_json(pareto)["params"] if pareto.exists() else [],
            "budget": {k: v for k, v in vars(self.budget).items() if v is not None},
        }

    def wandb_tables(self, wandb) -> dict[str, Any]:
        """The whole population as a wandb table (one row per evaluated subnet) and the Pareto plot."""
        recs = list(PopulationLog(self.search_dir / "population.jsonl").records.values())
        cols = ["params", "flops", "delta_m", "embed_dim", "depth", "task_specific_layers", "arch"]
        rows = [
            [
                r["cost"]["params"],
                r["cost"]["flops"],
                r["delta_m"],
                r["arch"]["embed_dim"],
                r["arch"]["depth"],
                sum(bool(layer["task_specific"]) for layer in r["arch"]["layers"]),
                yaml.safe_dump(r["arch"]),
            ]
            for r in recs
        ]
        out = {"population": wandb.Table(columns=cols, data=rows)}
        if (self.p.out / "pareto.png").exists():
            out["pareto"] = wandb.Image(str(self.p.out / "pareto.png"))
        return out

    def plot_pareto(self, results: dict[str, Any] | None = None) -> None:
        """`pareto.png`: after the search, and again after evaluation with the test Δm in the title."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        log = PopulationLog(self.search_dir / "population.jsonl")
        if not len(log):
            return
        recs = list(log.records.values())
        front = pareto_front(recs, "params")
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        ax.scatter(
            [r["cost"]["params"] / 1e6 for r in recs],
            [r["delta_m"] for r in recs],
            s=10,
            alpha=0.4,
            label=f"evaluated subnets ({len(recs)})",
        )
        ax.plot(
            [r["cost"]["params"] / 1e6 for r in front],
            [r["delta_m"] for r in front],
            "o-",
            color="C3",
            label=f"Pareto front ({len(front)})",
        )
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("params (M)")
        ax.set_ylabel("val Δm (%) with inherited weights")
        if results:
            mtl = results["models"]["multitask"]
            ax.set_title(f"{results['experiment']}: chosen arch retrained, test Δm {mtl['delta_m']:+.2f} %")
        else:
            ax.set_title(f"{self.cfg.experiment_name}: search (val Δm with inherited weights)")
        ax.legend(loc="best")  # a fixed corner can hide a front point
        fig.tight_layout()
        tmp = self.p.out / ".pareto.png.tmp"
        fig.savefig(tmp, format="png")
        plt.close(fig)
        tmp.replace(self.p.out / "pareto.png")


@cache
def _cost(arch, tasks, out_channels, grid, patch, head_dim, image_level) -> dict[str, int]:
    oc = dict(out_channels)
    return {
        "params": vit_arch_params(arch, list(tasks), oc, grid, patch, head_dim),
        "flops": vit_arch_flops(arch, list(tasks), oc, grid, patch, head_dim, image_level=image_level),
    }


class _progress:
    """Rich progress for the search (rank 0 only); yields a callback `(done, total) -> None`."""

    def __init__(self, description: str):
        self.description = description

    def __enter__(self):
        if rank_zero_only.rank != 0:
            return lambda done, total: None
        from rich.progress import Progress

        self.bar = Progress()
        self.bar.start()
        self.task = self.bar.add_task(self.description, total=None)
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if rank_zero_only.rank == 0:
            self.bar.stop()
