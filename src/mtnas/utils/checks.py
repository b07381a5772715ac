"""Value checks shared by every part that validates its own config section: one ConfigError naming the key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mtnas.errors import ConfigError


def positive_int(key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, f"got {value!r}; expected an integer ≥ {minimum}.")
    return value


def optional_positive_int(key: str, value: Any) -> int | None:
    return None if value is None else positive_int(key, value)


def one_of(key: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise ConfigError(key, f"got {value!r}; expected one of {list(allowed)}.")
    return value
