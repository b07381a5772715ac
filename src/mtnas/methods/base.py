"""What every method is (`Method`), how the configured one is built, and what searching methods share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from omegaconf import DictConfig

from mtnas.errors import ConfigError

if TYPE_CHECKING:
    from mtnas.run import Run


class Method(ABC):
    """A way to get a multi-task model: the stages it runs between the single-task baselines and the
    evaluation, and what each does. Built from `conf/method/<name>.yaml` (`_target_` plus the config
    sections it reads, so a bad value is refused when the method is built, before any work)."""

    stages: ClassVar[tuple[str, ...]]  # in order, e.g. ("supernet", "search", "retrain")
    optional_stages: ClassVar[tuple[str, ...]] = ()  # run only when asked for (`stage=study`), never by `all`
    final_folder: ClassVar[str]  # the run-folder subfolder of the multi-task model the evaluate stage tests

    def __init__(self, name: str):
        self.name = name

    def check(self, run: Run, plan: tuple[str, ...]) -> None:
        """What would otherwise fail after hours of training (budgets, weight files): raise a ConfigError.
        Nothing to check by default."""
        return None

    @abstractmethod
    def run_stage(self, stage: str, run: Run) -> None:
        """Run one of `stages` (skipping what the run folder already holds, resuming what it started)."""

    @abstractmethod
    def baseline_model(self, run: Run) -> dict[str, Any]:
        """The model spec (`_target_` mapping) the single-task baselines train, one task each."""

    def trained_dirs(self, run: Run) -> list[Path]:
        """Folders of this method's multi-task models (their tasks must be the run's)."""
        return [run.out / self.final_folder]

    def reference_folders(self, run: Run) -> dict[str, Path]:
        """Other multi-task models the method trained for comparison ({name in the report: folder}); the
        evaluate stage tests them beside the final one. None by default."""
        return {}

    def linked_runs(self) -> list[Path]:
        """Run folders the method's input files come from (their baselines are reused)."""
        return []

    def summary(self, run: Run) -> dict[str, Any] | None:
        """The search part of `results.json` and the report, or None for a method without a search."""
        return None

    def report(self, run: Run, results: Mapping[str, Any]) -> None:
        """After the evaluation (rank 0): the method's own report artifacts (e.g. the Pareto plot with the
        test Δm). Nothing by default."""
        return None

    def wandb_tables(self, run: Run, wandb: Any) -> dict[str, Any]:
        """The method's wandb tables and images beside the results table (e.g. every evaluated subnet)."""
        return {}


def build_method(cfg: DictConfig) -> Method:
    """The configured method, which checks its own config sections as it is built; then `stage`, which must
    be a common stage or one of the method's."""
    from mtnas.utils.specs import instantiate_spec

    method = instantiate_spec(cfg.method, "method", recursive=False)
    allowed = ("all", "baselines", *method.stages, "evaluate", *method.optional_stages)
    if cfg.stage not in allowed:
        raise ConfigError(
            "stage",
            f"got {cfg.stage!r}; method={method.name} runs the stages {list(allowed)}. Other stages belong to "
            "other methods (`method=`; a ViT `space=` selects method=autotaskformer).",
        )
    return method
