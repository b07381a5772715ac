"""Resource budgets (min/max params, FLOPs, measured latency) and the check that a space can meet one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mtnas.errors import ConfigError

COST_KEYS = ("params", "flops", "latency_ms")


@dataclass(frozen=True)
class Budget:
    params_min: float | None = None
    params_max: float | None = None
    flops_min: float | None = None
    flops_max: float | None = None
    latency_ms_min: float | None = None
    latency_ms_max: float | None = None

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> Budget:
        cfg = dict(cfg or {})
        unknown = set(cfg) - {f"{k}_{b}" for k in COST_KEYS for b in ("min", "max")} - {"name"}
        if unknown:
            raise ConfigError(
                f"budget.{sorted(unknown)[0]}",
                "unknown budget key; use params_min/max, flops_min/max, latency_ms_min/max.",
            )
        values = {k: _bound(f"budget.{k}", v) for k, v in cfg.items() if k != "name"}
        for key in COST_KEYS:
            lo, hi = values.get(f"{key}_min"), values.get(f"{key}_max")
            if lo is not None and hi is not None and lo > hi:
                raise ConfigError(f"budget.{key}_min", f"{lo:.4g} is above budget.{key}_max={hi:.4g}.")
        return cls(**values)

    @property
    def is_limited(self) -> bool:
        return any(v is not None for v in vars(self).values())

    def describe(self) -> str:
        """`params ≥ 4.51e+05, params ≤ 4.52e+05`, or `no budget`."""
        parts = [
            f"{key} {'≥' if bound == 'min' else '≤'} {getattr(self, f'{key}_{bound}'):.4g}"
            for key in COST_KEYS
            for bound in ("min", "max")
            if getattr(self, f"{key}_{bound}") is not None
        ]
        return ", ".join(parts) or "no budget"

    @property
    def limits_latency(self) -> bool:
        return self.latency_ms_min is not None or self.latency_ms_max is not None

    def satisfied(self, cost: Mapping[str, float]) -> bool:
        for key in COST_KEYS:
            lo, hi = getattr(self, f"{key}_min"), getattr(self, f"{key}_max")
            if (lo is not None and cost[key] < lo) or (hi is not None and cost[key] > hi):
                return False
        return True

    def check_feasible(self, smallest: Mapping[str, float], largest: Mapping[str, float]) -> None:
        """Cost grows monotonically from the smallest to the largest arch (measured latency nearly so):
        a budget outside that range can never be met, and is refused before any training."""
        for key in COST_KEYS:
            lo, hi = getattr(self, f"{key}_min"), getattr(self, f"{key}_max")
            if lo is None and hi is None:
                continue
            if hi is not None and smallest[key] > hi:
                raise ConfigError(
                    f"budget.{key}_max",
                    f"{hi:.4g} is below the smallest arch of the space ({smallest[key]:.4g} {key}); no arch can meet it.",
                )
            if lo is not None and largest[key] < lo:
                raise ConfigError(
                    f"budget.{key}_min",
                    f"{lo:.4g} is above the largest arch of the space ({largest[key]:.4g} {key}); no arch can meet it.",
                )


def _bound(key: str, value) -> float | None:
    """A budget bound: a positive plain number (params and FLOPs as counts, e.g. 5e6; latency in ms)."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            key,
            f"got {value!r}; expected a plain number without units (params/FLOPs as counts such as "
            "5e6 or 1.5e10, latency in milliseconds such as 15).",
        ) from None
    if not number > 0:
        raise ConfigError(key, f"got {value!r}; expected a positive number (or null for no bound).")
    return number


def sample_within(
    sample: Callable[[], object],
    cost: Callable[[object], Mapping[str, float]],
    budget: Budget,
    tries: int = 500,
):
    """Rejection sampling: an arch that meets the budget, or None after `tries` attempts."""
    for _ in range(tries):
        arch = sample()
        if budget.satisfied(cost(arch)):
            return arch
    return None
