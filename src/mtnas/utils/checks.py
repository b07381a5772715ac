"""Value checks shared by every part that validates its own config section: one ConfigError naming the key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mtnas.errors import ConfigError


def positive_int(key: str, value: Any, minimum: int = 1) -> int:
    """`value` as an int ≥ `minimum`; an integral float (`2.0`, as YAML or the command line may give it)
    counts as its int."""
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value < minimum:
        raise ConfigError(key, f"got {value!r}; expected an integer ≥ {minimum}.")
    return int(value)


def optional_positive_int(key: str, value: Any) -> int | None:
    return None if value is None else positive_int(key, value)


def non_negative_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(key, f"got {value!r}; expected a number ≥ 0.")
    return float(value)


def one_of(key: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise ConfigError(key, f"got {value!r}; expected one of {list(allowed)}.")
    return value


def positive_number(key: str, value: Any, upper: float | None = None) -> float:
    """`value` as a float > 0 (and ≤ `upper` when given)."""
    number = non_negative_number(key, value)
    if number == 0 or (upper is not None and number > upper):
        bound = f" and ≤ {upper:g}" if upper is not None else ""
        raise ConfigError(key, f"got {value!r}; expected a number > 0{bound}.")
    return number


def open_fraction(key: str, value: Any, allow_zero: bool = False) -> float:
    """`value` as a float strictly between 0 and 1, or also 0 (meaning "off") with `allow_zero`."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not (0 <= value < 1 if allow_zero else 0 < value < 1):
        expected = "a fraction ≥ 0 and < 1 (0 = off)" if allow_zero else "a fraction strictly between 0 and 1"
        raise ConfigError(key, f"got {value!r}; expected {expected}.")
    return float(value)
