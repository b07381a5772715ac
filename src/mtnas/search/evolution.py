"""Evolutionary search (AutoFormer) and random search under a budget.

AutoFormer's defaults: population 50, top-k 10, 25 mutations and 25 crossovers per generation, 20
generations; fitness = val Δm with inherited supernet weights. Random search is the baseline every
strategy must beat.

`parents=across_niches` takes the top-k across the problem's niches in turn (`best_across_niches`) rather than
the top-k overall: where the inherited score favours one sharing level, evolution otherwise spends every
generation on variants of that level's best and never refines the others (experiments/autotaskformer/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from mtnas.errors import ConfigError
from mtnas.search.problem import Problem, Strategy, best_across_niches
from mtnas.utils.checks import one_of, positive_int

PARENT_RULES = ("best", "across_niches")


@dataclass
class EvolutionSearch(Strategy):
    name = "evolution"
    population: int = 50
    top_k: int = 10
    mutations: int = 25
    crossovers: int = 25
    generations: int = 20
    parents: str = "best"  # the top_k parents: best val Δm overall, or across_niches (see the module's doc)

    def __post_init__(self):
        super().__post_init__()
        one_of("search.parents", self.parents, PARENT_RULES)
        for key, minimum in (
            ("population", 1),
            ("top_k", 1),
            ("generations", 1),
            ("mutations", 0),
            ("crossovers", 0),
        ):
            setattr(self, key, positive_int(f"search.{key}", getattr(self, key), minimum))
        if self.top_k > self.population:
            raise ConfigError(
                "search.top_k", f"{self.top_k} is more than search.population={self.population}."
            )

    def run(self, problem: Problem) -> None:
        population = problem.initial_population(self.population)
        for gen in range(self.generations):
            records = problem.score(population)
            top = self.select_parents(problem, population, records)
            problem.progress(gen + 1, self.generations)
            if gen == self.generations - 1:
                break
            children = [problem.within_budget(partial(_mutant, problem, top)) for _ in range(self.mutations)]
            children += [problem.within_budget(partial(_cross, problem, top)) for _ in range(self.crossovers)]
            population = top + [c for c in children if c is not None]

    def select_parents(self, problem: Problem, population: list, records: list) -> list:
        if self.parents == "across_niches":
            # An arch twice in the population has one record: each parent once.
            arch_of = {id(r): a for a, r in zip(population, records, strict=True)}
            unique = list({id(r): r for r in records}.values())
            return [arch_of[id(r)] for r in best_across_niches(unique, self.top_k, problem.niche)]
        ranked = sorted(zip(population, records, strict=True), key=lambda p: -p[1]["delta_m"])
        return [a for a, _ in ranked[: self.top_k]]


def _mutant(problem: Problem, parents: list):
    return problem.space.mutate(problem.rng.choice(parents), problem.rng)


def _cross(problem: Problem, parents: list):
    a, b = problem.rng.sample(parents, 2) if len(parents) > 1 else (parents[0], parents[0])
    return problem.space.crossover(a, b, problem.rng)


@dataclass
class RandomSearch(Strategy):
    name = "random"
    num_candidates: int = 100

    def __post_init__(self):
        super().__post_init__()
        self.num_candidates = positive_int("search.num_candidates", self.num_candidates)

    def run(self, problem: Problem) -> None:
        archs = [
            a
            for a in (
                problem.within_budget(lambda: problem.space.sample(problem.rng))
                for _ in range(self.num_candidates)
            )
            if a
        ]
        for i in range(0, len(archs), 8):
            problem.score(archs[i : i + 8])
            problem.progress(min(i + 8, len(archs)), len(archs))
