"""Objects built from `_target_` specs (Hydra's `instantiate`), with one-paragraph errors naming the key.

Models, spaces, search strategies and methods are all specs: a mapping with `_target_` (the dotted path of a
class or function) and its settings, plus arguments only known at run time (tasks, image size). Hydra builds
the target with the spec's settings; the run-time arguments are added outside Hydra, so objects reach the
target as they are (never converted into config nodes). A wrong key or value names the config key instead of
surfacing as a traceback from Python internals.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Collection, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtnas.errors import ConfigError, MtnasError

log = logging.getLogger(__name__)


def as_dict(spec: Any) -> dict[str, Any]:
    if isinstance(spec, DictConfig):
        return OmegaConf.to_container(spec, resolve=True)
    return dict(spec)


def locate(path: str, key: str) -> Any:
    """The object a dotted path names (`pkg.module.Class.method`); a ConfigError at `key._target_` when it
    names nothing, saying why (a missing module, a failing import inside it, a missing attribute)."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue  # this prefix is not a module: try a shorter one
            raise ConfigError(
                f"{key}._target_", f"{path!r}: importing {module_name} failed: {err}."
            ) from None
        except Exception as err:  # noqa: BLE001 - a plugin whose own import fails: say so, with its error
            raise ConfigError(
                f"{key}._target_", f"{path!r}: importing {module_name} failed: {type(err).__name__}: {err}."
            ) from None
        for attr in parts[split:]:
            if not hasattr(obj, attr):
                raise ConfigError(f"{key}._target_", f"{path!r}: {obj.__name__} has no {attr!r}.")
            obj = getattr(obj, attr)
        return obj
    raise ConfigError(f"{key}._target_", f"{path!r} names no importable module.")


def check_spec(
    spec: Mapping[str, Any], key: str, runtime: Collection[str] = ()
) -> tuple[Any, dict[str, Any]]:
    """The target a spec names and the spec as plain data, after checking its settings against the target's
    signature without building anything: unknown settings, missing required ones and settings that the run
    itself provides (`runtime`, e.g. `tasks`) are ConfigErrors at `key.<setting>`."""
    spec = as_dict(spec)
    target = spec.get("_target_")
    if not isinstance(target, str) or not target:
        raise ConfigError(
            key, f"needs a `_target_` naming the class or function that builds it; got {spec!r}."
        )
    obj = locate(target, key)
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # no readable signature (a builtin): let the call itself judge
        return obj, spec
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    known = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"]
    settings = {k for k in spec if not k.startswith("_")}
    clash = sorted(settings & set(runtime))
    if clash:
        raise ConfigError(
            f"{key}.{clash[0]}", f"is given by the run itself to {target}; remove it from the config."
        )
    unknown = [] if takes_any else sorted(settings - set(known))
    if unknown:
        settable = [n for n in known if n not in runtime]
        raise ConfigError(
            f"{key}.{unknown[0]}", f"is not a setting of {target}; its settings are {settable}."
        )
    required = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    missing = [
        n
        for n, prm in params.items()
        if prm.default is prm.empty and prm.kind in required and n not in settings | set(runtime) | {"self"}
    ]
    if missing:
        raise ConfigError(f"{key}.{missing[0]}", f"is required by {target} and not given.")
    return obj, spec


def instantiate_spec(
    spec: Mapping[str, Any], key: str, *, recursive: bool = True, lenient: bool = False, **runtime: Any
) -> Any:
    """Build `spec` with `runtime` arguments added. `key` is where the spec sits in the config (`space`,
    `search`, `model`, ...): see `check_spec` for what is refused; a `MtnasError` raised by the target itself
    (its own validation, naming its key) passes through unchanged.

    `lenient=True` drops unknown settings with a warning instead: a recipe may tune several options of one
    group (e.g. `search.top_k` for evolution) and still run with another (`search=nsga2`)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if lenient:
        spec = _drop_unknown(as_dict(spec), key, runtime)
    _, spec = check_spec(spec, key, runtime)
    spec.pop("_partial_", None)
    try:
        build = instantiate(spec, _convert_="all", _recursive_=recursive, _partial_=True)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, MtnasError):
            raise cause from None
        raise
    return build(**runtime)


def _drop_unknown(spec: dict[str, Any], key: str, runtime: Mapping[str, Any]) -> dict[str, Any]:
    target = spec.get("_target_")
    if not isinstance(target, str):
        return spec
    try:
        params = inspect.signature(locate(target, key)).parameters
    except (TypeError, ValueError):
        return spec
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return spec
    unknown = sorted(k for k in spec if not k.startswith("_") and k not in params)
    if unknown:
        log.warning(
            "%s: %s %s %s; ignored (its settings: %s).",
            key,
            ", ".join(f"`{key}.{k}`" for k in unknown),
            "is not a setting of" if len(unknown) == 1 else "are not settings of",
            target,
            [n for n in params if n not in runtime and n != "self"],
        )
    return {k: v for k, v in spec.items() if k not in unknown}
