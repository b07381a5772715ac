"""Objects built from `_target_` specs (Hydra's `instantiate`), with one-paragraph errors naming the key.

Models, spaces, search strategies and methods are all specs: a mapping with `_target_` (the dotted path of a
class or function) and its arguments, plus arguments only known at run time (tasks, image size). Hydra's own
errors would be a traceback naming Python internals; here a wrong key or value names the config key.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtnas.errors import ConfigError, MtnasError

log = logging.getLogger(__name__)


def as_dict(spec: Any) -> dict[str, Any]:
    if isinstance(spec, DictConfig):
        return OmegaConf.to_container(spec, resolve=True)
    return dict(spec)


def instantiate_spec(
    spec: Mapping[str, Any], key: str, *, recursive: bool = True, lenient: bool = False, **runtime: Any
) -> Any:
    """Build `spec` with `runtime` arguments added. `key` is where the spec sits in the config (`space`,
    `search`, `model`, ...): unknown arguments, missing ones and values the target refuses are ConfigErrors at
    `key.<argument>`; a `MtnasError` raised by the target itself passes through unchanged.

    `lenient=True` drops unknown arguments with a warning instead: a recipe may tune several options of one
    group (e.g. `search.top_k` for evolution) and still run with another (`search=nsga2`)."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_object, instantiate

    spec = as_dict(spec)
    target = spec.get("_target_")
    if not isinstance(target, str) or not target:
        raise ConfigError(
            key, f"needs a `_target_` naming the class or function that builds it; got {spec!r}."
        )
    try:
        obj = get_object(target)
    except Exception:  # noqa: BLE001 - any import failure: the spec names something that is not there
        raise ConfigError(f"{key}._target_", f"{target!r} names no importable class or function.") from None
    params = inspect.signature(obj).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"]
    args = {k for k in spec if not k.startswith("_")}
    unknown = sorted(args - set(known)) if not takes_any else []
    if unknown and lenient:
        log.warning(
            "%s: %s %s %s; ignored (its settings: %s).",
            key,
            ", ".join(f"`{key}.{k}`" for k in unknown),
            "is not a setting of" if len(unknown) == 1 else "are not settings of",
            target,
            [n for n in known if n not in runtime],
        )
        spec = {k: v for k, v in spec.items() if k not in unknown}
        args -= set(unknown)
    elif unknown:
        settable = [n for n in known if n not in runtime]
        raise ConfigError(
            f"{key}.{unknown[0]}", f"is not a setting of {target}; its settings are {settable}."
        )
    missing = [
        n
        for n, p in params.items()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in args
        and n not in runtime
        and n != "self"
    ]
    if missing:
        raise ConfigError(f"{key}.{missing[0]}", f"is required by {target} and not given.")
    try:
        return instantiate(spec, **runtime, _convert_="all", _recursive_=recursive)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, MtnasError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, MtnasError):
            raise cause from None
        if isinstance(cause, TypeError | ValueError):
            raise ConfigError(key, f"{target} refused its settings: {cause}") from None
        raise
