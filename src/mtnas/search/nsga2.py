"""NSGA-II (Deb et al. 2002): multi-objective search of Δm against `objectives` (params, FLOPs, latency).

Each generation breeds `population` children from the current population (binary tournaments on front rank,
then crowding distance; crossover with probability `crossover_prob`, then the space's mutation), scores
them, and keeps the best `population` of parents + children by non-dominated front and, within the last
front that fits, by crowding distance. `generations` counts scoring rounds, as in evolution, so both
strategies score the same number of candidates for the same `population` and `generations` (and
`mutations + crossovers = population`). Non-dominated sorting and crowding distance are pymoo's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial

import numpy as np

from mtnas.errors import ConfigError
from mtnas.search.pareto import crowding_distance, fronts, objective_matrix
from mtnas.search.population import arch_key
from mtnas.search.problem import Problem, Strategy
from mtnas.utils.checks import positive_int


@dataclass
class NSGA2Search(Strategy):
    name = "nsga2"
    population: int = 50
    generations: int = 20
    crossover_prob: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        self.population = positive_int("search.population", self.population, minimum=2)
        self.generations = positive_int("search.generations", self.generations)
        if (
            isinstance(self.crossover_prob, bool)
            or not isinstance(self.crossover_prob, int | float)
            or not (0 <= self.crossover_prob <= 1)
        ):
            raise ConfigError(
                "search.crossover_prob", f"got {self.crossover_prob!r}; expected a number in [0, 1]."
            )

    def run(self, problem: Problem) -> None:
        population = problem.initial_population(self.population)
        records = problem.score(population)
        for gen in range(self.generations):
            problem.progress(gen + 1, self.generations)
            if gen == self.generations - 1:
                break
            rank, crowd = rank_and_crowding(objective_matrix(records, self.objectives))
            breed = partial(self._child, problem, population, rank, crowd)
            children = [c for c in (problem.within_budget(breed) for _ in range(self.population)) if c]
            merged, seen = [], set()
            for arch in population + children:  # a child equal to a parent would crowd the population
                if arch_key(arch.to_dict()) not in seen:
                    seen.add(arch_key(arch.to_dict()))
                    merged.append(arch)
            merged_records = problem.score(merged)
            keep = survivors(objective_matrix(merged_records, self.objectives), self.population)
            population = [merged[i] for i in keep]
            records = [merged_records[i] for i in keep]

    def _child(self, problem: Problem, population: list, rank: np.ndarray, crowd: np.ndarray):
        rng, space = problem.rng, problem.space
        first = population[tournament(rank, crowd, rng)]
        if rng.random() < self.crossover_prob:
            second = population[tournament(rank, crowd, rng)]
            first = space.crossover(first, second, rng)
        return space.mutate(first, rng)


def rank_and_crowding(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its front index (0 = non-dominated) and its crowding distance within that front."""
    rank = np.zeros(len(matrix), dtype=int)
    crowd = np.zeros(len(matrix), dtype=float)
    for k, front in enumerate(fronts(matrix)):
        rank[front] = k
        crowd[front] = crowding_distance(matrix[front])
    return rank, crowd


def tournament(rank: np.ndarray, crowd: np.ndarray, rng: random.Random) -> int:
    """Binary tournament: the lower front wins, then the larger crowding distance, then the first drawn."""
    a, b = rng.randrange(len(rank)), rng.randrange(len(rank))
    if rank[a] != rank[b]:
        return a if rank[a] < rank[b] else b
    return a if crowd[a] >= crowd[b] else b


def survivors(matrix: np.ndarray, size: int) -> list[int]:
    """Indices of the `size` rows NSGA-II keeps: whole fronts in order, the last one by crowding distance."""
    keep: list[int] = []
    for front in fronts(matrix):
        if len(keep) + len(front) <= size:
            keep += front.tolist()
            continue
        crowd = crowding_distance(matrix[front])
        order = sorted(range(len(front)), key=lambda i: -crowd[i])  # stable: ties keep their order
        keep += [int(front[i]) for i in order[: size - len(keep)]]
        break
    return keep
