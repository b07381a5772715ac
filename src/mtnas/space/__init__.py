"""Search spaces and their genotypes (Arch): sample / mutate / crossover / encode, YAML round trip."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mtnas.space.vit import ViTArch, ViTSpace

__all__ = ["ViTArch", "ViTSpace", "build_space"]


def build_space(spec: Mapping[str, Any], tasks: Sequence[str]):
    """The space a `space` spec describes, for `tasks`. A spec saved by mtnas before specs had `_target_`
    (`name: vit`, in older supernet checkpoints) is read as the ViT space it was."""
    from mtnas.utils.specs import as_dict, instantiate_spec

    spec = as_dict(spec)
    if "_target_" not in spec and spec.get("name") == "vit":
        spec = {
            "_target_": f"{ViTSpace.__module__}.ViTSpace",
            **{k: v for k, v in spec.items() if k != "name"},
        }
    return instantiate_spec(spec, "space", tasks=tuple(tasks))
