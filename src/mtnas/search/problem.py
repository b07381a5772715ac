"""What a search strategy is given (`Problem`) and what every strategy is (`Strategy`).

The space must offer `sample(rng)`, `mutate(arch, rng)`, `crossover(a, b, rng)` and `arch_from_dict(d)`;
archs must offer `to_dict()`. A record in the log is `{"arch": dict, "cost": {params, flops, ...},
"delta_m": float, "metrics": {...}}`.

A method poses the problem: its space (sample / mutate / crossover), how a batch of archs is scored (val Δm),
their cost, the budget, and the append-only population log. A strategy proposes archs and asks the problem
to score them; archs already in the log are never scored again, so the log is the whole state of a search and
rerunning a strategy with the same seed resumes it.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mtnas.errors import ConfigError, MtnasError
from mtnas.search.budget import COST_KEYS, Budget, sample_within
from mtnas.search.population import PopulationLog, arch_key
from mtnas.utils.checks import optional_positive_int, positive_int, positive_number

SELECTION_RULES = ("best", "knee", "frugal")


@dataclass
class Problem:
    space: Any
    evaluate: Callable[[list], list[Mapping[str, Any]]]
    cost: Callable[[Any], Mapping[str, float]]
    budget: Budget
    log: PopulationLog
    rng: random.Random
    progress: Callable[[int, int], None] = field(default=lambda done, total: None)
    max_tries: int = 500
    cost_keys: Collection[str] = ()  # costs every record must have (records from an older search may not)
    # Archs a population-based strategy starts from, before random ones: the method's best-trained archs
    # (the one-shot supernet's sandwich archs), so a search never ends below them for lack of sampling them.
    anchors: Sequence = ()
    # The arch's niche (an arch dict → a label): the one-shot method's sharing level. Scores are comparable within
    # a niche more than across (`best_across_niches`); one niche by default.
    niche: Callable[[Mapping[str, Any]], Hashable] = field(default=lambda arch: 0)

    def __post_init__(self):
        # A search resumed with a new cost (e.g. latency_ms added to the objectives) completes the cost of the
        # records already in the log, in memory, without evaluating them again.
        for record in self.log.records.values():
            if not set(self.cost_keys) <= set(record["cost"]):
                arch = self.space.arch_from_dict(record["arch"], source=self.log.path)
                record["cost"] = {**self.cost(arch), **record["cost"]}

    def score(self, archs: Sequence, found_by: str | None = None) -> list[dict[str, Any]]:
        """Records for `archs` in order; only archs not yet in the log are evaluated (in one batch), their
        records marked `found_by` when given (a step after the strategy's own, e.g. a local search)."""
        todo, seen = [], set()
        for a in archs:
            key = arch_key(a.to_dict())
            if self.log.get(a.to_dict()) is None and key not in seen:
                todo.append(a)
                seen.add(key)
        if todo:
            for arch, result in zip(todo, self.evaluate(todo), strict=True):
                mark = {"found_by": found_by} if found_by else {}
                self.log.append({"arch": arch.to_dict(), "cost": dict(self.cost(arch)), **result, **mark})
        return [self.log.get(a.to_dict()) for a in archs]

    def within_budget(self, make: Callable[[], Any]):
        """An arch from `make()` that meets the budget, or None after `max_tries` attempts."""
        return sample_within(make, self.cost, self.budget, self.max_tries)

    def initial_population(self, size: int) -> list:
        keys = {arch_key(a.to_dict()): a for a in self.anchors if self.budget.satisfied(self.cost(a))}
        population = list(keys.values())[:size]
        population += [
            a
            for a in (
                self.within_budget(lambda: self.space.sample(self.rng)) for _ in range(size - len(population))
            )
            if a
        ]
        if not population:
            raise MtnasError(
                f"the search found no arch within the budget in {size * self.max_tries} random "
                "tries; widen `budget` or the space."
            )
        return population


def best_across_niches(
    records: Sequence[Mapping[str, Any]], k: int, niche: Callable[[Mapping[str, Any]], Hashable]
) -> list[Mapping[str, Any]]:
    """`k` of `records` by Δm, taken across niches in turn: the best of every niche (best niche first), then the
    second best of each, and so on. When a proxy score is biased by niche (inherited weights favour the sharing
    levels the supernet trained most), this keeps each niche's best in play instead of only the favoured one's."""
    queues: dict[Hashable, list[Mapping[str, Any]]] = {}
    for r in sorted(records, key=lambda r: -r["delta_m"]):
        queues.setdefault(niche(r["arch"]), []).append(r)
    taken: list[Mapping[str, Any]] = []
    while len(taken) < k and any(queues.values()):
        taken += [q.pop(0) for q in queues.values() if q][: k - len(taken)]
    return taken


@dataclass
class Strategy(ABC):
    """A search strategy, built from `conf/search/<name>.yaml` (`_target_`). Settings every strategy has:

    - `val_batches`: val batches each candidate is scored on (None = all);
    - `objectives`: costs traded against Δm in the reported front and its hypervolume (and optimised
      together by multi-objective strategies): any of params, flops, latency_ms;
    - `select`: which arch of the log becomes `arch.yaml`: `best` Δm within the budget, or the `knee` of the
      Δm-vs-`objectives[0]` front within the budget;
    - `finetune_top` (0 = off): before selecting, re-score the `finetune_top` best archs by their val Δm after
      `finetune_epochs` epochs of training from inherited weights at `finetune_lr_scale` × `optim.lr`;
    - `finetune_local` (0 = off): then this many more fine-tunes by local search on the fine-tuned score: each
      scores `finetune_screen` unseen mutants of the best fine-tuned arch so far with inherited weights and
      fine-tunes the best of them.
    """

    name: ClassVar[str]
    val_batches: int | None = None
    objectives: Sequence[str] = ("params",)
    select: str = "best"
    tolerance: float = 0.5  # select=frugal: points of val Δm within which the cheapest arch is taken
    finetune_top: int = 0
    finetune_epochs: int = 2
    finetune_lr_scale: float = 0.1
    finetune_local: int = 0
    finetune_screen: int = 4

    def __post_init__(self):
        self.val_batches = optional_positive_int("search.val_batches", self.val_batches)
        self.finetune_top = positive_int("search.finetune_top", self.finetune_top, minimum=0)
        self.finetune_epochs = positive_int("search.finetune_epochs", self.finetune_epochs)
        self.finetune_lr_scale = positive_number("search.finetune_lr_scale", self.finetune_lr_scale)
        self.finetune_local = positive_int("search.finetune_local", self.finetune_local, minimum=0)
        self.finetune_screen = positive_int("search.finetune_screen", self.finetune_screen)
        if self.finetune_local and not self.finetune_top:
            raise ConfigError(
                "search.finetune_local",
                f"got {self.finetune_local} with search.finetune_top=0: the local search starts from the best of "
                "the fine-tuned candidates, so set search.finetune_top ≥ 1 too.",
            )
        if (
            isinstance(self.tolerance, bool)
            or not isinstance(self.tolerance, int | float)
            or self.tolerance < 0
        ):
            raise ConfigError(
                "search.tolerance", f"got {self.tolerance!r}; expected a number ≥ 0 (points of Δm)."
            )
        self.tolerance = float(self.tolerance)
        objectives = list(self.objectives) if isinstance(self.objectives, Sequence) else None
        if (
            objectives is None
            or isinstance(self.objectives, str)
            or not objectives
            or any(o not in COST_KEYS for o in objectives)
            or len(set(objectives)) != len(objectives)
        ):
            raise ConfigError(
                "search.objectives",
                f"got {self.objectives!r}; expected a non-empty list of distinct costs from {list(COST_KEYS)}, "
                "e.g. search.objectives=[params,latency_ms].",
            )
        self.objectives = tuple(objectives)
        if self.select not in SELECTION_RULES:
            raise ConfigError(
                "search.select", f"got {self.select!r}; expected one of {list(SELECTION_RULES)}."
            )

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:  # how reports and arch.yaml name the strategy
            cls.name = cls.__name__.lower().removesuffix("search")

    @abstractmethod
    def run(self, problem: Problem) -> None:
        """Propose and score archs until the strategy's own limit; every score lands in `problem.log`."""
