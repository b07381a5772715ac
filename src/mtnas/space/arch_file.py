"""Reading an arch file (a run's `arch.yaml`, possibly hand-edited) with one-paragraph errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

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


class ArchFileSpace:
    """What a search space with `why_outside(arch)` offers for arch dicts and files: `contains`,
    `arch_from_dict` and `read_arch`, each refusal a ConfigError at `key` naming the source and why.
    A space sets `arch_type` (with `from_dict`) and `arch_file_what` (what a valid file is, for errors)."""

    arch_type: ClassVar[type]
    arch_file_what: ClassVar[str]

    def contains(self, arch) -> bool:
        return self.why_outside(arch) is None

    def arch_from_dict(self, d: Mapping[str, Any], source: object = "an arch", key: str = "arch"):
        arch = self.arch_type.from_dict(d)
        why = self.why_outside(arch)
        if why:
            raise ConfigError(key, f"{source} is outside the search space: {why}.")
        return arch

    def read_arch(self, path: str | Path, key: str = "arch"):
        arch = read_arch_file(path, key, self.arch_type.from_dict, self.arch_file_what)
        return self.arch_from_dict(arch.to_dict(), source=Path(path).expanduser(), key=key)
