"""Fronts of the population log, their hypervolume, and the rule that picks `arch.yaml` from the log.

Objectives are minimised as pymoo expects: −Δm, then each cost in `objectives`. Non-dominated sorting and
the hypervolume indicator come from pymoo (well-tested, exact in few dimensions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

HV_REFERENCE_DELTA_M = -100.0  # Δm of the hypervolume's reference point (every metric lost entirely)
HV_REFERENCE_COST = 1.1  # cost of the reference point, as a multiple of the space's largest arch


def pareto_front(records: Iterable[Mapping[str, Any]], cost_key: str = "params") -> list[dict[str, Any]]:
    """Records not dominated in (Δm ↑, cost ↓), sorted by cost."""
    recs = sorted(records, key=lambda r: (r["cost"][cost_key], -r["delta_m"]))
    front, best = [], float("-inf")
    for r in recs:
        if r["delta_m"] > best:
            front.append(dict(r))
            best = r["delta_m"]
    return front


def objective_matrix(records: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> np.ndarray:
    """One row per record, to minimise: (−Δm, cost[objective] for each objective)."""
    return np.array(
        [[-float(r["delta_m"]), *(float(r["cost"][o]) for o in objectives)] for r in records], dtype=float
    ).reshape(len(records), 1 + len(objectives))


def fronts(matrix: np.ndarray) -> list[np.ndarray]:
    """Indices of the rows in each non-dominated front, best front first (pymoo's fast sorting)."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    if len(matrix) == 0:
        return []
    return [np.asarray(f, dtype=int) for f in NonDominatedSorting().do(matrix)]


def crowding_distance(matrix: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within its front (infinite at the extremes)."""
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance

    if len(matrix) <= 2:
        return np.full(len(matrix), np.inf)
    return np.asarray(calc_crowding_distance(matrix), dtype=float)


def non_dominated(records: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> list[dict[str, Any]]:
    """The records no other record beats in Δm and every objective at once, sorted by the first objective."""
    if not records:
        return []
    first = fronts(objective_matrix(records, objectives))[0]
    return sorted((dict(records[i]) for i in first), key=lambda r: (r["cost"][objectives[0]], -r["delta_m"]))


def hypervolume_reference(
    records: Sequence[Mapping[str, Any]], objectives: Sequence[str], largest: Mapping[str, float]
) -> dict[str, float]:
    """The hypervolume's reference point: Δm −100 % and, per objective, 1.1 × the largest arch's cost, or
    the costliest record when that is higher (a measured latency can exceed the largest arch's timing)."""
    worst = {o: max((float(r["cost"][o]) for r in records), default=0.0) for o in objectives}
    return {
        "delta_m": HV_REFERENCE_DELTA_M,
        **{o: max(HV_REFERENCE_COST * float(largest[o]), worst[o]) for o in objectives},
    }


def hypervolume(
    records: Sequence[Mapping[str, Any]], objectives: Sequence[str], reference: Mapping[str, float]
) -> float:
    """Hypervolume of the records' front in (Δm / 100, cost / reference cost) space, against the reference
    point (`hypervolume_reference`): the share of the box between the ideal point (Δm = 0, cost 0) and the
    reference that the front dominates, plus more where Δm > 0. Larger is better; it compares searches of one
    space whatever their strategy."""
    from pymoo.indicators.hv import HV

    if not records:
        return 0.0
    scale = np.array([100.0, *(float(reference[o]) for o in objectives)])
    points = objective_matrix(records, objectives) / scale
    ref = np.array([-float(reference["delta_m"]) / 100.0, *([1.0] * len(objectives))])
    points = points[(points < ref).all(axis=1)]  # points beyond the reference add no volume
    return float(HV(ref_point=ref)(points)) if len(points) else 0.0


def knee(front: Sequence[Mapping[str, Any]], cost_key: str) -> Mapping[str, Any]:
    """The knee of a Δm-vs-cost front: with both axes scaled to [0, 1] over the front, the member farthest
    above the chord from the cheapest to the best member (where more cost starts to buy less Δm). A front
    with no member above the chord (gains still growing with cost), or of two members or fewer, has no knee:
    its best member is chosen."""
    if len(front) <= 2:
        return max(front, key=lambda r: r["delta_m"])
    cost = np.array([r["cost"][cost_key] for r in front], dtype=float)
    dm = np.array([r["delta_m"] for r in front], dtype=float)
    x = (cost - cost.min()) / max(cost.max() - cost.min(), 1e-12)
    y = (dm - dm.min()) / max(dm.max() - dm.min(), 1e-12)
    above = y - x  # distance above the chord from (0, 0) (cheapest, worst) to (1, 1) (dearest, best), × √2
    if above.max() <= 0:
        return max(front, key=lambda r: r["delta_m"])
    return front[int(np.argmax(above))]


def select(
    records: Sequence[Mapping[str, Any]], rule: str, objectives: Sequence[str], tolerance: float = 0.5
) -> Mapping[str, Any]:
    """The chosen record among `records` (all within the budget): `best` Δm; the `knee` of the
    Δm-vs-`objectives[0]` front; or `frugal`: the cheapest in `objectives[0]` among those within `tolerance`
    points of the best Δm (inherited scores differ by noise at that scale, so a larger arch scored a few
    tenths higher is not better — and retrains no better)."""
    if rule == "knee":
        return knee(pareto_front(records, objectives[0]), objectives[0])
    best = max(records, key=lambda r: r["delta_m"])
    if rule == "frugal":
        close = [r for r in records if r["delta_m"] >= best["delta_m"] - tolerance]
        return min(close, key=lambda r: (r["cost"][objectives[0]], -r["delta_m"]))
    return best
