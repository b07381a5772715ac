"""Search under a budget on a known fitness: stays in budget, is seeded, resumes without re-evaluating;
NSGA-II recovers a known front; hypervolume and the selection rules; how AutoMTL and MTNAS choose among the
archs their logits give."""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import dataclass

import pytest

from mtnas.errors import ConfigError, MtnasError
from mtnas.methods.searching import SearchMethod
from mtnas.search.budget import Budget
from mtnas.search.evolution import EvolutionSearch, RandomSearch
from mtnas.search.pareto import pareto_front
from mtnas.search.population import PopulationLog
from mtnas.search.problem import Problem, best_across_niches
from mtnas.space import ViTSpace

SPACE = ViTSpace(
    tasks=("a", "b"),
    embed_dims=(16, 24, 32),
    depths=(3, 4, 5),
    num_heads=(2, 4),
    mlp_ratios=(1.0, 2.0, 3.0),
    head_hidden=(8, 16),
)


def cost(arch):
    # A monotone stand-in for params: grows with every dimension of the arch.
    p = arch.embed_dim * sum(
        h * 8 + r * arch.embed_dim for h, r in zip(arch.num_heads, arch.mlp_ratio, strict=True)
    )
    p += sum(len(ts) for ts in arch.task_specific) * 500
    return {"params": p, "flops": 2 * p}


class Fitness:
    """Δm that prefers wide, deep archs with task-specific last layers; counts evaluations."""

    def __init__(self):
        self.evaluated = []

    def __call__(self, archs):
        self.evaluated += [a.to_dict() for a in archs]
        return [
            {
                "delta_m": a.embed_dim / 8 + a.depth + 2 * len(a.task_specific[-1]) + sum(a.mlp_ratio) / 10,
                "metrics": {},
            }
            for a in archs
        ]


def run_evolution(tmp_path, budget, seed=0, gens=4, fitness=None):
    fitness = fitness or Fitness()
    log = PopulationLog(tmp_path / "population.jsonl")
    problem = Problem(SPACE, fitness, cost, budget, log, random.Random(seed))
    EvolutionSearch(population=12, top_k=4, mutations=6, crossovers=6, generations=gens).run(problem)
    return log, fitness


def test_evolution_respects_budget_and_improves(tmp_path):
    budget = Budget(params_max=cost(SPACE.largest())["params"] * 0.5)
    log, fitness = run_evolution(tmp_path, budget)
    recs = list(log.records.values())
    assert all(budget.satisfied(r["cost"]) for r in recs)
    best = max(r["delta_m"] for r in recs)
    rand_log = PopulationLog(tmp_path / "r.jsonl")
    RandomSearch(num_candidates=12).run(Problem(SPACE, Fitness(), cost, budget, rand_log, random.Random(0)))
    assert best >= max(r["delta_m"] for r in rand_log.records.values())
    assert len(fitness.evaluated) == len(
        {str(sorted(d.items(), key=str)) for d in fitness.evaluated}
    )  # never twice


def test_evolution_starts_from_the_anchor_archs_within_the_budget(tmp_path):
    largest, smallest = SPACE.largest(), SPACE.smallest()
    fitness = Fitness()
    problem = Problem(SPACE, fitness, cost, Budget(), PopulationLog(tmp_path / "a.jsonl"), random.Random(0),
                      anchors=[largest, smallest, largest])  # fmt: skip
    population = problem.initial_population(5)
    assert population[:2] == [largest, smallest] and len(population) == 5
    assert largest not in population[2:]  # an anchor once, the rest sampled
    # An anchor outside the budget is left out, not searched.
    budget = Budget(params_max=cost(largest)["params"] - 1)
    problem = Problem(SPACE, fitness, cost, budget, PopulationLog(tmp_path / "b.jsonl"), random.Random(0),
                      anchors=[largest, smallest])  # fmt: skip
    assert problem.initial_population(3)[0] == smallest and largest not in problem.initial_population(3)


def sharing_level(arch_dict):
    return sum(bool(layer["task_specific"]) for layer in arch_dict["layers"])


def test_best_across_niches_takes_each_niches_best_in_turn():
    records = [
        {"arch": "a0", "delta_m": 9.0},
        {"arch": "a1", "delta_m": 8.0},
        {"arch": "b0", "delta_m": 5.0},
        {"arch": "c0", "delta_m": 7.0},
        {"arch": "b1", "delta_m": 1.0},
    ]
    niche = lambda arch: arch[0]  # noqa: E731
    names = lambda k: [r["arch"] for r in best_across_niches(records, k, niche)]  # noqa: E731
    assert names(3) == ["a0", "c0", "b0"]  # each niche's best, the niches in order of their best
    assert names(5) == ["a0", "c0", "b0", "a1", "b1"]  # then each niche's second best, and so on
    assert names(2) == ["a0", "c0"] and names(9) == names(5)
    assert [r["arch"] for r in best_across_niches(records, 3, lambda arch: 0)] == ["a0", "a1", "c0"]


def test_evolution_parents_across_niches_keep_each_sharing_levels_best(tmp_path):
    """A fitness that favours hard sharing (the bias of inherited scores): the best parents are all of one
    sharing level; `parents=across_niches` keeps the best of every level present."""
    rng = random.Random(0)
    population = [SPACE.sample(rng) for _ in range(12)] + [SPACE.largest()] * 2  # an arch twice
    records = [
        {"arch": a.to_dict(), "delta_m": 10.0 * (sharing_level(a.to_dict()) == 0) + a.embed_dim / 8}
        for a in population
    ]
    records[-1] = records[-2]  # the log gives one record per arch
    problem = Problem(SPACE, Fitness(), cost, Budget(), PopulationLog(tmp_path / "p.jsonl"), rng,
                      niche=sharing_level)  # fmt: skip
    levels = {sharing_level(r["arch"]) for r in records}
    assert len(levels) >= 3

    def parents(rule, k):
        evolution = EvolutionSearch(population=14, top_k=k, parents=rule)
        return evolution.select_parents(problem, population, records)

    assert parents("best", 2) == [SPACE.largest()] * 2  # the best arch, twice
    across = [sharing_level(a.to_dict()) for a in parents("across_niches", len(levels))]
    assert sorted(across) == sorted(levels) and across[0] == 0
    every = parents("across_niches", 14)
    assert len(every) == 13 == len({str(a.to_dict()) for a in every})  # an arch is a parent once
    log = PopulationLog(tmp_path / "run.jsonl")
    problem = Problem(SPACE, Fitness(), cost, Budget(), log, random.Random(0), niche=sharing_level)
    EvolutionSearch(
        population=8, top_k=3, mutations=4, crossovers=4, generations=3, parents="across_niches"
    ).run(problem)
    assert len(log) > 8


def test_same_seed_same_result(tmp_path):
    a, _ = run_evolution(tmp_path / "a", Budget())
    b, _ = run_evolution(tmp_path / "b", Budget())
    assert list(a.records) == list(b.records)


def test_resume_evaluates_no_candidate_twice(tmp_path):
    full, _ = run_evolution(tmp_path / "full", Budget(), gens=4)
    # Interrupted after 2 generations, then resumed with the same seed: the log is the cache.
    part_dir = tmp_path / "part"
    run_evolution(part_dir, Budget(), gens=2)
    lines_before = (part_dir / "population.jsonl").read_text().count("\n")
    resumed, fitness = run_evolution(part_dir, Budget(), gens=4)
    assert set(resumed.records) == set(full.records)
    assert len(fitness.evaluated) == len(full.records) - lines_before
    assert (part_dir / "population.jsonl").read_text().count("\n") == len(full.records)


def test_pareto_front_is_non_dominated():
    recs = [
        {"cost": {"params": p}, "delta_m": d} for p, d in [(1, 0.0), (2, 1.0), (3, 0.5), (4, 2.0), (5, 2.0)]
    ]
    front = pareto_front(recs)
    assert [(r["cost"]["params"], r["delta_m"]) for r in front] == [(1, 0.0), (2, 1.0), (4, 2.0)]


def test_infeasible_budget_is_a_config_error():
    small, large = cost(SPACE.smallest()), cost(SPACE.largest())
    with pytest.raises(ConfigError, match="budget.params_max"):
        Budget(params_max=small["params"] - 1).check_feasible(small, large)
    with pytest.raises(ConfigError, match="budget.flops_min"):
        Budget(flops_min=large["flops"] + 1).check_feasible(small, large)
    with pytest.raises(ConfigError, match="budget.latency"):
        Budget.from_config({"latency": 3})
    Budget(params_max=large["params"]).check_feasible(small, large)


@pytest.mark.parametrize(
    "given,key,says",
    [
        ({"flops_max": "10G"}, "budget.flops_max", "without units"),
        ({"latency_ms_max": "15ms"}, "budget.latency_ms_max", "without units"),
        ({"params_max": -5}, "budget.params_max", "positive"),
        ({"params_min": 4e5, "params_max": 2e5}, "budget.params_min", "above budget.params_max"),
    ],
)
def test_budget_values_are_checked_with_their_key(given, key, says):
    with pytest.raises(ConfigError) as e:
        Budget.from_config(given)
    assert e.value.key == key and says in str(e.value)
    assert (
        Budget.from_config({"params_min": "1e5", "params_max": 2e5}).describe()
        == "params ≥ 1e+05, params ≤ 2e+05"
    )


def test_a_budget_window_no_arch_falls_in_is_a_clear_error(tmp_path):
    """Each bound alone is inside the space, but no arch's (integer) cost lies between them."""
    from mtnas.errors import MtnasError

    x = cost(SPACE.sample(random.Random(0)))["params"]
    budget = Budget(params_min=x + 0.1, params_max=x + 0.2)
    log = PopulationLog(tmp_path / "population.jsonl")
    problem = Problem(SPACE, Fitness(), cost, budget, log, random.Random(0), max_tries=20)
    with pytest.raises(MtnasError, match="no arch within the budget"):
        EvolutionSearch(population=4, top_k=2, mutations=2, crossovers=2, generations=2).run(problem)


def test_latency_budget_and_cached_measurements(tmp_path):
    import torch

    from mtnas.search.cost import measure_latency
    from mtnas.search.latency import LatencyTable

    small, large = {**cost(SPACE.smallest()), "latency_ms": 2.0}, {**cost(SPACE.largest()), "latency_ms": 9.0}
    budget = Budget.from_config({"latency_ms_max": 5})
    assert budget.limits_latency and not Budget().limits_latency
    assert budget.satisfied(small) and not budget.satisfied(large)
    with pytest.raises(ConfigError, match="budget.latency_ms_max"):
        Budget(latency_ms_max=1.0).check_feasible(small, large)

    calls = []
    table = LatencyTable(tmp_path / "lat.json", torch.device("cpu"), 1, (32, 32))
    assert table("a", lambda: calls.append(1) or 3.0) == 3.0
    assert table("a", lambda: calls.append(1) or 99.0) == 3.0  # cached: measured once
    again = LatencyTable(tmp_path / "lat.json", torch.device("cpu"), 1, (32, 32))
    assert again("a", lambda: 99.0) == 3.0 and again.measured == 0  # persisted across runs
    other = LatencyTable(tmp_path / "lat.json", torch.device("cpu"), 4, (32, 32))
    assert other("a", lambda: 7.0) == 7.0  # another batch size is another measurement
    assert calls == [1]

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    assert measure_latency(net, (32, 32), repeats=3) > 0 and net.training  # mode restored


@dataclass(frozen=True)
class Point:
    """A toy arch: two integer genes."""

    a: int
    b: int

    def to_dict(self):
        return {"a": self.a, "b": self.b}


class GridSpace:
    """Archs (a, b) on a 0..40 grid, with the operators a strategy uses."""

    N = 40

    def sample(self, rng):
        return Point(rng.randint(0, self.N), rng.randint(0, self.N))

    def mutate(self, p, rng):
        clip = lambda v: min(self.N, max(0, v))  # noqa: E731
        if rng.random() < 0.5:
            return Point(clip(p.a + rng.choice((-3, -2, -1, 1, 2, 3))), p.b)
        return Point(p.a, clip(p.b + rng.choice((-3, -2, -1, 1, 2, 3))))

    def crossover(self, p, q, rng):
        return Point(rng.choice((p.a, q.a)), rng.choice((p.b, q.b)))


def toy_cost(p):
    return {"params": p.a + 1, "flops": 2 * (p.a + 1)}


def toy_fitness(points):
    # Δm grows with cost (a) and peaks at b = 20: the true front is b = 20 for every a (41 points).
    return [{"delta_m": 10 * p.a**0.5 - (p.b - 20) ** 2, "metrics": {}} for p in points]


def test_nsga2_recovers_a_known_front(tmp_path):
    from mtnas.search.nsga2 import NSGA2Search
    from mtnas.search.pareto import non_dominated

    log = PopulationLog(tmp_path / "population.jsonl")
    problem = Problem(GridSpace(), toy_fitness, toy_cost, Budget(), log, random.Random(0))
    NSGA2Search(population=40, generations=25).run(problem)
    true_front = {(a, 20) for a in range(GridSpace.N + 1)}
    found = {(r["arch"]["a"], r["arch"]["b"]) for r in non_dominated(list(log.records.values()), ["params"])}
    assert found <= true_front  # nothing dominated is reported as the front
    assert len(found) >= 0.9 * len(true_front), sorted(true_front - found)
    assert len(log) < (GridSpace.N + 1) ** 2 / 2  # it searched: far fewer evaluations than the grid

    # The same seed gives the same search; a resumed search evaluates nothing again.
    again = PopulationLog(tmp_path / "population.jsonl")
    evaluated = []
    NSGA2Search(population=40, generations=25).run(
        Problem(
            GridSpace(),
            lambda ps: evaluated.extend(ps) or toy_fitness(ps),
            toy_cost,
            Budget(),
            again,
            random.Random(0),
        )
    )
    assert evaluated == [] and list(again.records) == list(log.records)


@pytest.mark.parametrize(
    "given,key",
    [
        ({"population": 1}, "search.population"),
        ({"crossover_prob": 1.5}, "search.crossover_prob"),
        ({"objectives": ["params", "memory"]}, "search.objectives"),
        ({"objectives": "params"}, "search.objectives"),
        ({"select": "median"}, "search.select"),
        ({"val_batches": 0}, "search.val_batches"),
    ],
)
def test_strategy_settings_are_checked_with_their_key(given, key):
    from mtnas.search.nsga2 import NSGA2Search

    with pytest.raises(ConfigError) as e:
        NSGA2Search(**given)
    assert e.value.key == key


def test_hypervolume_knee_and_selection():
    from mtnas.search.pareto import hypervolume, hypervolume_reference, knee, non_dominated, select

    recs = [
        {"arch": {"i": i}, "cost": {"params": p}, "delta_m": d}
        for i, (p, d) in enumerate([(1, -50.0), (2, -20.0), (3, -10.0), (4, 0.0), (3.5, -30.0)])
    ]
    ref = {"delta_m": -100.0, "params": 4.4}  # 1.1 × the largest arch's 4 params
    assert hypervolume_reference(recs, ["params"], {"params": 4.0}) == ref
    assert hypervolume_reference(recs, ["params"], {"params": 3.0}) == {"delta_m": -100.0, "params": 4.0}
    front = non_dominated(recs, ["params"])
    assert [r["arch"]["i"] for r in front] == [0, 1, 2, 3]
    # Staircase area in (cost / 4.4, −Δm / 100) against the reference point (1, 1):
    xs, ys = [1 / 4.4, 2 / 4.4, 3 / 4.4, 4 / 4.4], [0.5, 0.2, 0.1, 0.0]
    area = sum((nxt - x) * (1.0 - y) for x, nxt, y in zip(xs, [*xs[1:], 1.0], ys, strict=True))
    assert hypervolume(recs, ["params"], ref) == pytest.approx(area)
    assert hypervolume(recs[:1], ["params"], ref) < hypervolume(recs, ["params"], ref)
    assert hypervolume([], ["params"], ref) == 0.0
    # knee: with both axes scaled to [0, 1], the point farthest above the chord cheapest → best
    assert knee(front, "params")["arch"]["i"] == 1
    assert select(recs, "best", ["params"])["arch"]["i"] == 3
    assert select(recs, "knee", ["params"])["arch"]["i"] == 1
    # A front whose gains still grow with cost has no knee: the best member is chosen.
    convex = [
        {"arch": {"i": i}, "cost": {"params": p}, "delta_m": d}
        for i, (p, d) in enumerate([(1, 0.0), (2, 1.0), (3, 5.0)])
    ]
    assert knee(convex, "params")["arch"]["i"] == 2
    # frugal: the cheapest within `tolerance` points of the best Δm (here −16.2 at 0.39 M).
    scored = [
        {"arch": {"i": i}, "cost": {"params": p}, "delta_m": d}
        for i, (p, d) in enumerate(
            [(0.39, -16.2), (0.238, -16.49), (0.246, -16.61), (0.18, -17.37), (0.24, -16.49)]
        )
    ]
    assert select(scored, "frugal", ["params"], tolerance=0.5)["arch"]["i"] == 1
    assert select(scored, "frugal", ["params"], tolerance=1.5)["arch"]["i"] == 3
    assert select(scored, "frugal", ["params"], tolerance=0.0)["arch"]["i"] == 0


def test_a_torn_last_line_is_skipped_reported_and_cut_before_the_next_append(tmp_path, caplog):
    """A kill or a full disk mid-write leaves a partial last line: it is skipped with a warning, and the next
    append cuts it off instead of writing onto it, so the file keeps exactly one line per candidate."""
    path = tmp_path / "population.jsonl"
    log = PopulationLog(path)
    log.append({"arch": {"a": 1}, "cost": {"params": 1}, "delta_m": 0.5})
    log.append({"arch": {"a": 2}, "cost": {"params": 2}, "delta_m": 0.7})
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[1][:17])  # a third record cut mid-write
    with caplog.at_level("WARNING"):
        resumed = PopulationLog(path)
    assert len(resumed) == 2 and "ends in a torn line (17 bytes" in caplog.text
    resumed.append({"arch": {"a": 3}, "cost": {"params": 3}, "delta_m": 0.9})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["arch"]["a"] for line in lines] == [1, 2, 3]
    assert len(PopulationLog(path)) == 3


class DerivingMethod:
    """The parts of a searching method `choose_derived` uses, around the real `SearchMethod.choose_derived`:
    scoring returns fixed records (one per arch name), and the choice is recorded instead of written."""

    choose_derived = SearchMethod.choose_derived
    search_dir = staticmethod(SearchMethod.search_dir)
    objectives = ("params",)
    name = "deriving"

    def __init__(self, scores, pick, params_max):
        self.scores, self.derive = scores, {"pick": pick}
        self.budget = Budget(params_max=params_max)

    def problem(self, run, log, rng, progress):
        scores = self.scores

        class Scored:
            def score(self, archs):
                return [{"arch": a, "cost": {"params": scores[a][0]}, "delta_m": scores[a][1]} for a in archs]

        return Scored()

    def write_choice(self, run, log, records, best, how):
        self.chosen = (best["arch"], how)


class FakeRun:
    is_writer, seed = True, 0

    def __init__(self, out):
        self.out = out

    def progress(self, message):
        return contextlib.nullcontext(None)


# (params, val Δm) of the logits' own arch and two samples drawn from them.
DERIVED = {"argmax": (100, 1.0), "small": (50, 2.0), "big": (200, 5.0)}


@pytest.mark.parametrize(
    ("pick", "params_max", "chosen"),
    [
        ("argmax", 150, "argmax"),  # the logits' arch, within the budget, though a sample scores higher
        ("argmax", 80, "small"),  # the logits' arch is over the budget: the best sample within it
        ("best", 150, "small"),  # the best val Δm within the budget
        ("best", 1000, "big"),
    ],
)
def test_choose_derived_picks_the_logits_arch_or_the_best_within_the_budget(
    tmp_path, pick, params_max, chosen
):
    method = DerivingMethod(DERIVED, pick, params_max)
    scored, best, how = method.choose_derived(
        FakeRun(tmp_path),
        "search",
        list(DERIVED),
        ("the logits' arch", "the best sample"),
        "method.x.budget_weight",
    )
    assert [r["arch"] for r in scored] == list(DERIVED)
    assert best["arch"] == chosen
    assert method.chosen == (chosen, f"deriving ({how})")
    assert how == ("the logits' arch" if chosen == "argmax" else "the best sample")


def test_choose_derived_names_the_knob_when_no_arch_fits_the_budget(tmp_path):
    method = DerivingMethod(DERIVED, "argmax", 10)
    with pytest.raises(MtnasError, match=r"none of the 3 derived archs .*raise method\.x\.budget_weight"):
        method.choose_derived(
            FakeRun(tmp_path), "search", list(DERIVED), ("a", "b"), "method.x.budget_weight"
        )


class FineTuningMethod:
    """The parts of a searching method `finetuned` uses, around the real `SearchMethod` re-scoring: the fine-tuned
    score is a known function of the arch (`hidden`), and each arch's fine-tunes are counted."""

    finetuned = SearchMethod.finetuned
    rescored = SearchMethod.rescored
    locally_searched = SearchMethod.locally_searched

    def __init__(self, top, local, screen=3):
        self.finetune_top, self.finetune_local, self.finetune_screen = top, local, screen
        self.space, self.trained = SPACE, []

    @staticmethod
    def hidden(arch_dict):
        # What a fine-tune reveals and the inherited score (`Fitness`) misses: task copies in the first layer pay.
        return 5 * len(arch_dict["layers"][0]["task_specific"]) - arch_dict["embed_dim"] / 8

    def finetuned_delta_m(self, run, arch_dict, i=0, n=1):
        self.trained.append(arch_dict)
        return self.hidden(arch_dict)

    def sharing_level(self, arch_dict):
        return sharing_level(arch_dict)


class Announcing:
    def __init__(self):
        self.said = []

    def announce(self, message):
        self.said.append(message)


class WatchedSpace:
    """SPACE, recording the parent of every mutation with the number of screens scored before it."""

    def __init__(self, scored):
        self.scored, self.parents = scored, []

    def __getattr__(self, name):
        return getattr(SPACE, name)

    def mutate(self, arch, rng):
        self.parents.append((len(self.scored), arch.to_dict()))
        return SPACE.mutate(arch, rng)


def searched_records(tmp_path, seed=0):
    log = PopulationLog(tmp_path / "population.jsonl")
    RandomSearch(num_candidates=20).run(Problem(SPACE, Fitness(), cost, Budget(), log, random.Random(seed)))
    return log


def test_finetune_local_search_climbs_from_the_best_fine_tuned_arch(tmp_path):
    """`search.finetune_local`: after the `finetune_top` candidates (the best of each sharing level in turn), each
    step scores `finetune_screen` unseen mutants of the best fine-tuned arch so far with inherited weights (into the
    population log) and fine-tunes the best of them."""
    log = searched_records(tmp_path)
    records = list(log.records.values())
    method = FineTuningMethod(top=3, local=4, screen=3)
    scored: list[list] = []
    method.space = space = WatchedSpace(scored)
    problem = Problem(space, Fitness(), cost, Budget(), log, random.Random(1))
    score = problem.score
    problem.score = lambda archs, found_by=None: scored.append(score(archs, found_by)) or scored[-1]
    out = method.finetuned(Announcing(), records, problem)

    assert [r["arch"] for r in out[:3]] == [r["arch"] for r in best_across_niches(records, 3, sharing_level)]
    assert len(out) == 7 and len(scored) == 4 and method.trained == [r["arch"] for r in out]
    assert [r.get("found_by") for r in out] == [None] * 3 + ["local search"] * 4
    assert len({json.dumps(r["arch"], sort_keys=True) for r in out}) == 7  # no arch fine-tuned twice
    for step, screen in enumerate(scored):
        so_far = out[: 3 + step]
        assert len(screen) == 3 and all(r["arch"] not in [c["arch"] for c in so_far] for r in screen)
        assert all(log.get(r["arch"]) is r for r in screen)  # scored into the population log
        assert all(r.get("found_by") == "local search" for r in screen if r not in records)
        pick = out[3 + step]
        assert pick["arch"] == max(screen, key=lambda r: r["delta_m"])["arch"]
        assert pick["inherited_delta_m"] == max(r["delta_m"] for r in screen)
        assert pick["delta_m"] == FineTuningMethod.hidden(pick["arch"])
        # Every mutation of the step starts from the best fine-tuned arch before it.
        parents = [p for s, p in space.parents if s == step]
        assert parents and all(p == max(so_far, key=lambda r: r["delta_m"])["arch"] for p in parents)


def test_finetune_local_search_without_a_problem_takes_as_many_by_the_rule_and_resumes(tmp_path):
    """A study's random search has no local search: it fine-tunes `finetune_top + finetune_local` candidates by the
    same rule, as many fine-tunes as the search spent. Rerun with the same seed over the same log, the local search
    proposes the same archs and scores no new one (a resumed search)."""
    log = searched_records(tmp_path)
    records = list(log.records.values())
    by_rule = FineTuningMethod(top=2, local=3).finetuned(Announcing(), records)
    assert [r["arch"] for r in by_rule] == [r["arch"] for r in best_across_niches(records, 5, sharing_level)]

    first = FineTuningMethod(top=2, local=3).finetuned(
        Announcing(), records, Problem(SPACE, Fitness(), cost, Budget(), log, random.Random(3))
    )
    local = [r for r in log.records.values() if r.get("found_by") == "local search"]
    assert local and all(r not in records for r in local)  # the screened mutants, marked in the log
    fitness = Fitness()
    resumed = list(PopulationLog(log.path).records.values())  # as a rerun reads it: the mutants in it
    again = FineTuningMethod(top=2, local=3).finetuned(
        Announcing(), resumed, Problem(SPACE, fitness, cost, Budget(), log, random.Random(3))
    )
    assert again == first and fitness.evaluated == []


def test_finetune_local_search_stops_and_says_so_when_no_mutant_fits_the_budget(tmp_path):
    run, smallest = Announcing(), SPACE.smallest()

    def only_the_smallest_fits(arch):
        params = 1 if arch.to_dict() == smallest.to_dict() else 2
        return {"params": params, "flops": params}

    problem = Problem(
        SPACE,
        Fitness(),
        only_the_smallest_fits,
        Budget(params_max=1),
        PopulationLog(tmp_path / "p.jsonl"),
        random.Random(0),
        max_tries=20,
    )
    out = FineTuningMethod(top=1, local=2).finetuned(run, problem.score([smallest]), problem)
    assert len(out) == 1
    assert run.said == ["search: local search stopped after 0 steps: no unseen mutant within the budget"]


def test_finetune_local_needs_finetune_top():
    with pytest.raises(ConfigError) as e:
        EvolutionSearch(finetune_local=2)
    assert e.value.key == "search.finetune_local" and "search.finetune_top" in str(e.value)
