"""Reading an arch file (a run's `arch.yaml`, possibly hand-edited) with one-paragraph errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mtnas.errors import ConfigError

Arch = TypeVar("Arch")


def read_arch_file(
    path: str | Path, key: str, from_dict: Callable[[Mapping[str, Any]], Arch], what: str
) -> Arch:
    """The arch `from_dict` makes of the YAML mapping in `path`; a missing file, or one that is not `what`,
    is a ConfigError at `key`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(key, f"arch file {path} does not exist.")
    try:
        d = yaml.safe_load(path.read_text())
        if not isinstance(d, Mapping):
            raise ValueError(f"the file holds a {type(d).__name__}, not a mapping")
        return from_dict(d)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, ConfigError) as err:
        why = str(err).removeprefix("Config error at `arch`: ").splitlines()[0]
        raise ConfigError(key, f"{path} is not {what}: {why}") from None
