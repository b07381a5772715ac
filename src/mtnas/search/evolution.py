"""Evolutionary and random search over a space, under a budget, with a cached, resumable fitness.

AutoFormer's defaults: population 50, top-k 10, 25 mutations and 25 crossovers per generation,
20 generations. `evaluate` scores a batch of archs (Δm on the val split with inherited weights);
archs already in the population log are never evaluated again.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from mtnas.errors import MtnasError
from mtnas.search.budget import Budget, sample_within
from mtnas.search.population import PopulationLog, arch_key


@dataclass(frozen=True)
class EvolutionConfig:
    population: int = 50
    top_k: int = 10
    mutations: int = 25
    crossovers: int = 25
    generations: int = 20


class Searcher:
    """Shared machinery: budgeted candidates, cached evaluation, logging."""

    def __init__(
        self,
        space,
        cost: Callable[[Any], Mapping[str, float]],
        budget: Budget,
        evaluate: Callable[[list], list[Mapping[str, Any]]],
        log: PopulationLog,
        rng: random.Random,
        progress: Callable[[int, int], None] | None = None,
        max_tries: int = 500,
    ):
        self.space, self.cost, self.budget, self.evaluate, self.log, self.rng = (
            space,
            cost,
            budget,
            evaluate,
            log,
            rng,
        )
        self.progress = progress or (lambda done, total: None)
        self.max_tries = max_tries

    def _score(self, archs: Sequence) -> list[dict[str, Any]]:
        """Records for `archs` in order; only archs not yet in the log are evaluated (in one batch)."""
        todo, seen = [], set()
        for a in archs:
            key = arch_key(a.to_dict())
            if self.log.get(a.to_dict()) is None and key not in seen:
                todo.append(a)
                seen.add(key)
        if todo:
            for arch, result in zip(todo, self.evaluate(todo), strict=True):
                self.log.append({"arch": arch.to_dict(), "cost": dict(self.cost(arch)), **result})
        return [self.log.get(a.to_dict()) for a in archs]

    def _within(self, make: Callable[[], Any]):
        return sample_within(make, self.cost, self.budget, self.max_tries)


class RandomSearch(Searcher):
    def run(self, num_candidates: int) -> list[dict[str, Any]]:
        archs = [
            a for a in (self._within(lambda: self.space.sample(self.rng)) for _ in range(num_candidates)) if a
        ]
        out = []
        for i in range(0, len(archs), 8):
            out += self._score(archs[i : i + 8])
            self.progress(len(out), len(archs))
        return out


class EvolutionSearch(Searcher):
    def run(self, cfg: EvolutionConfig) -> list[dict[str, Any]]:
        population = [
            a for a in (self._within(lambda: self.space.sample(self.rng)) for _ in range(cfg.population)) if a
        ]
        if not population:
            raise MtnasError(
                f"the search found no arch within the budget in {cfg.population * self.max_tries} random "
                "tries; widen `budget` or the space."
            )
        for gen in range(cfg.generations):
            records = self._score(population)
            ranked = sorted(zip(population, records, strict=True), key=lambda p: -p[1]["delta_m"])
            top = [a for a, _ in ranked[: cfg.top_k]]
            self.progress(gen + 1, cfg.generations)
            if gen == cfg.generations - 1:
                break
            children = [self._within(partial(self._mutant, top)) for _ in range(cfg.mutations)]
            children += [self._within(partial(self._cross, top)) for _ in range(cfg.crossovers)]
            children = [c for c in children if c is not None]
            population = top + children
        return list(self.log.records.values())

    def _mutant(self, top: list):
        return self.space.mutate(self.rng.choice(top), self.rng)

    def _cross(self, top: list):
        a, b = self.rng.sample(top, 2) if len(top) > 1 else (top[0], top[0])
        return self.space.crossover(a, b, self.rng)
