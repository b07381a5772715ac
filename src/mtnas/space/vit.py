"""The AutoTaskFormer-style ViT search space and its genotype.

An arch fixes the embedding width, the depth, per-layer heads and MLP ratio (AutoFormer), and per layer
which tasks use a task-specific copy of the block's weights instead of the shared one. Per task, a dense
head width is chosen from a small head space (MTNAS branch search).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtnas.errors import ConfigError
from mtnas.space.arch_file import read_arch_file


def _is_choice(value: Any, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return False
    return isinstance(value, int) if integer else True


def _exact_int(value: Any) -> int:
    """An integer field of an arch file: `2` or `2.0`, never `2.5` silently truncated to 2."""
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    ):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


@dataclass(frozen=True)
class ViTArch:
    """A complete description of one subnet; frozen and hashable (a dict key in search)."""

    embed_dim: int
    depth: int
    num_heads: tuple[int, ...]  # per layer, len == depth
    mlp_ratio: tuple[float, ...]  # per layer, len == depth
    task_specific: tuple[frozenset[str], ...]  # per layer: tasks that use their own copy of the block
    head_hidden: tuple[tuple[str, int], ...]  # per task: dense head width, sorted by task

    def __post_init__(self):
        for name in ("num_heads", "mlp_ratio", "task_specific"):
            if len(getattr(self, name)) != self.depth:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for depth {self.depth}")

    @property
    def heads(self) -> dict[str, int]:
        return dict(self.head_hidden)

    def hard_sharing(self) -> ViTArch:
        """The same arch with every layer shared by all tasks (no task-specific block)."""
        return dataclasses.replace(self, task_specific=tuple(frozenset() for _ in self.task_specific))

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-friendly form: a person can read and edit it."""
        return {
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "layers": [
                {"num_heads": h, "mlp_ratio": r, "task_specific": sorted(ts)}
                for h, r, ts in zip(self.num_heads, self.mlp_ratio, self.task_specific, strict=True)
            ],
            "head_hidden": dict(self.head_hidden),
        }

    def describe(self) -> str:
        """One line for tables: `d4 e64 · heads 2,4,2,4 · mlp 3,3,3,2 · specific L1:depth+semseg · head 32/32`."""
        specific = [f"L{i + 1}:{'+'.join(sorted(ts))}" for i, ts in enumerate(self.task_specific) if ts]
        return " · ".join(
            [
                f"d{self.depth} e{self.embed_dim}",
                "heads " + ",".join(map(str, self.num_heads)),
                "mlp " + ",".join(f"{r:g}" for r in self.mlp_ratio),
                "specific " + (" ".join(specific) if specific else "none"),
                "head " + "/".join(str(h) for _, h in self.head_hidden),
            ]
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ViTArch:
        try:
            layers = list(d["layers"])
            return cls(
                embed_dim=_exact_int(d["embed_dim"]),
                depth=_exact_int(d.get("depth", len(layers))),
                num_heads=tuple(_exact_int(layer["num_heads"]) for layer in layers),
                mlp_ratio=tuple(float(layer["mlp_ratio"]) for layer in layers),
                task_specific=tuple(frozenset(layer.get("task_specific", ())) for layer in layers),
                head_hidden=tuple(sorted((str(t), _exact_int(h)) for t, h in d["head_hidden"].items())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError("arch", f"not a valid ViT arch description ({e!r}).") from None

    @classmethod
    def read(cls, path: str | Path, key: str = "arch") -> ViTArch:
        """The arch in a YAML file (a run's arch.yaml); any other file is a one-paragraph error at `key`."""
        return read_arch_file(
            path, key, cls.from_dict, "an arch file (a run's arch.yaml, as the search writes it)"
        )


@dataclass(frozen=True)
class ViTSpace:
    """Choices per dimension. `max_*` define the supernet; every arch is a sub-network of it.
    Built from `conf/space/*.yaml` (`_target_: mtnas.space.vit.ViTSpace`) with the run's `tasks`."""

    tasks: tuple[str, ...]
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    head_hidden: tuple[int, ...] = (64,)
    task_specific: bool = True  # may a layer hold task-specific copies at all?
    specific_layers: tuple[int, ...] | None = None  # layers that may (None = every layer)
    mutate_prob: float = 0.2  # per-layer choice mutation probability
    mutate_depth_width_prob: float = 0.4
    # Width of one attention head. Default: max embed dim / max heads, which makes the largest arch a
    # timm ViT (loadable from timm weights). AutoFormer instead fixes it at 64 (its B space needs that).
    attn_head_dim: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        for key in ("embed_dims", "depths", "num_heads", "mlp_ratios", "head_hidden"):
            values = getattr(self, key)
            integers = key != "mlp_ratios"
            if (
                not isinstance(values, Sequence)
                or isinstance(values, str)
                or not values
                or not all(_is_choice(v, integers) for v in values)
            ):
                what = "positive integers" if integers else "positive numbers"
                raise ConfigError(f"space.{key}", f"got {values!r}; expected a non-empty list of {what}.")
            object.__setattr__(self, key, tuple(sorted(values)))
        if self.specific_layers is not None:
            layers = self.specific_layers
            if isinstance(layers, str) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < max(self.depths) for i in layers
            ):
                raise ConfigError(
                    "space.specific_layers",
                    f"got {layers!r}; expected layer indices from 0 to {max(self.depths) - 1} (or null for all).",
                )
            object.__setattr__(self, "specific_layers", tuple(layers))
        if self.attn_head_dim is not None and self.attn_head_dim <= 0:
            raise ConfigError(
                "space.attn_head_dim", f"got {self.attn_head_dim}; expected a positive integer."
            )
        if self.attn_head_dim is None and max(self.embed_dims) % max(self.num_heads):
            raise ConfigError(
                "space.num_heads",
                f"max embed dim {max(self.embed_dims)} must be divisible by max heads {max(self.num_heads)} "
                "(the supernet's head dim is their ratio, as in timm's qkv layout), or set space.attn_head_dim.",
            )

    # -- arch files ----------------------------------------------------------------------------------
    def arch_from_dict(self, d: Mapping[str, Any], source: object = "an arch", key: str = "arch") -> ViTArch:
        """The arch `d` describes, which must lie in this space (else a ConfigError at `key`)."""
        return self.require(ViTArch.from_dict(d), source, key)

    def read_arch(self, path: str | Path, key: str = "arch") -> ViTArch:
        """The arch in a YAML file (a run's arch.yaml), which must lie in this space."""
        return self.require(ViTArch.read(path, key), path, key)

    # -- geometry of the supernet ----------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.attn_head_dim or max(self.embed_dims) // max(self.num_heads)

    def can_specialise(self, layer: int) -> bool:
        return self.task_specific and (self.specific_layers is None or layer in self.specific_layers)

    # -- canonical archs -------------------------------------------------------------------------
    def _arch(self, dim, depth, heads, ratios, specific, hidden) -> ViTArch:
        return ViTArch(
            dim,
            depth,
            tuple(heads),
            tuple(float(r) for r in ratios),
            tuple(frozenset(s) for s in specific),
            tuple(sorted(hidden.items())),
        )

    def largest(self, task_specific: bool = False) -> ViTArch:
        d = max(self.depths)
        specific = [set(self.tasks) if task_specific and self.can_specialise(i) else set() for i in range(d)]
        return self._arch(
            max(self.embed_dims),
            d,
            [max(self.num_heads)] * d,
            [max(self.mlp_ratios)] * d,
            specific,
            {t: max(self.head_hidden) for t in self.tasks},
        )

    def smallest(self) -> ViTArch:
        d = min(self.depths)
        return self._arch(
            min(self.embed_dims),
            d,
            [min(self.num_heads)] * d,
            [min(self.mlp_ratios)] * d,
            [set()] * d,
            {t: min(self.head_hidden) for t in self.tasks},
        )

    def uniform_archs(self) -> list[ViTArch]:
        """Every hard-sharing arch whose layers all have the same heads and MLP ratio and whose task heads are
        all as wide: the hand-made models of this space (the study's hard-sharing baseline)."""
        return [
            self._arch(dim, d, [h] * d, [r] * d, [set()] * d, {t: hidden for t in self.tasks})
            for dim, d, h, r, hidden in itertools.product(
                self.embed_dims, self.depths, self.num_heads, self.mlp_ratios, self.head_hidden
            )
        ]

    def _layer_specific(self, rng: random.Random, layer: int) -> set[str]:
        if not self.can_specialise(layer):
            return set()
        return {t for t in self.tasks if rng.random() < 0.5}

    def with_sampled_sharing(self, arch: ViTArch, rng: random.Random) -> ViTArch:
        """`arch` with each layer's task-specific copies drawn as `sample` draws them: its sizes, random sharing."""
        specific = tuple(frozenset(self._layer_specific(rng, i)) for i in range(arch.depth))
        return dataclasses.replace(arch, task_specific=specific)

    def sample(self, rng: random.Random) -> ViTArch:
        d = rng.choice(self.depths)
        return self._arch(
            rng.choice(self.embed_dims),
            d,
            [rng.choice(self.num_heads) for _ in range(d)],
            [rng.choice(self.mlp_ratios) for _ in range(d)],
            [self._layer_specific(rng, i) for i in range(d)],
            {t: rng.choice(self.head_hidden) for t in self.tasks},
        )

    def contains(self, arch: ViTArch) -> bool:
        return self.why_outside(arch) is None

    def require(self, arch: ViTArch, source: object, key: str = "arch") -> ViTArch:
        """`arch`, or a ConfigError at `key` naming `source` (its file) and the first field outside."""
        why = self.why_outside(arch)
        if why:
            raise ConfigError(
                key, f"{source} describes an arch outside this run's search space (`space`): {why}."
            )
        return arch

    def why_outside(self, arch: ViTArch) -> str | None:
        """None for an arch of this space, else the first field that is not (for error messages)."""

        def choice(field: str, value, allowed) -> str:
            return f"{field} {value!r} is not one of the space's choices {list(allowed)}"

        if arch.embed_dim not in self.embed_dims:
            return choice("embed_dim", arch.embed_dim, self.embed_dims)
        if arch.depth not in self.depths:
            return choice("depth", arch.depth, self.depths)
        for i, (h, r, ts) in enumerate(zip(arch.num_heads, arch.mlp_ratio, arch.task_specific, strict=True)):
            layer = f"layers[{i}]."
            if h not in self.num_heads:
                return choice(layer + "num_heads", h, self.num_heads)
            if r not in self.mlp_ratios:
                return choice(layer + "mlp_ratio", r, self.mlp_ratios)
            if not ts <= set(self.tasks):
                return (
                    f"{layer}task_specific names {sorted(ts - set(self.tasks))}, not tasks {list(self.tasks)}"
                )
            if ts and not self.can_specialise(i):
                return (
                    f"{layer}task_specific is not allowed: the space has no task-specific copies at layer {i}"
                )
        if set(arch.heads) != set(self.tasks):
            return f"head_hidden is given for tasks {sorted(arch.heads)}; expected tasks {sorted(self.tasks)}"
        for t, h in arch.heads.items():
            if h not in self.head_hidden:
                return choice(f"head_hidden.{t}", h, self.head_hidden)
        return None

    # -- evolution operators (AutoFormer) -----------------------------------------------------------
    def mutate(self, arch: ViTArch, rng: random.Random) -> ViTArch:
        dim, depth = arch.embed_dim, arch.depth
        heads, ratios, specific = (
            list(arch.num_heads),
            list(arch.mlp_ratio),
            [set(s) for s in arch.task_specific],
        )
        if rng.random() < self.mutate_depth_width_prob:
            depth = rng.choice(self.depths)
        if rng.random() < self.mutate_depth_width_prob:
            dim = rng.choice(self.embed_dims)
        while len(heads) < depth:  # new layers get random choices
            i = len(heads)
            heads.append(rng.choice(self.num_heads))
            ratios.append(rng.choice(self.mlp_ratios))
            specific.append(self._layer_specific(rng, i))
        heads, ratios, specific = heads[:depth], ratios[:depth], specific[:depth]
        for i in range(depth):
            if rng.random() < self.mutate_prob:
                heads[i] = rng.choice(self.num_heads)
            if rng.random() < self.mutate_prob:
                ratios[i] = rng.choice(self.mlp_ratios)
            if rng.random() < self.mutate_prob:
                specific[i] = self._layer_specific(rng, i)
        hidden = {
            t: (rng.choice(self.head_hidden) if rng.random() < self.mutate_prob else h)
            for t, h in arch.heads.items()
        }
        return self._arch(dim, depth, heads, ratios, specific, hidden)

    def crossover(self, a: ViTArch, b: ViTArch, rng: random.Random) -> ViTArch:
        """Uniform crossover per gene; layers beyond the shorter parent come from the deeper one."""
        depth = rng.choice((a.depth, b.depth))
        longer = a if a.depth >= b.depth else b

        def pick(i: int, name: str):
            options = [p for p in (a, b) if i < p.depth] or [longer]
            return getattr(rng.choice(options), name)[i]

        return self._arch(
            rng.choice((a.embed_dim, b.embed_dim)),
            depth,
            [pick(i, "num_heads") for i in range(depth)],
            [pick(i, "mlp_ratio") for i in range(depth)],
            [pick(i, "task_specific") for i in range(depth)],
            {t: rng.choice((a.heads[t], b.heads[t])) for t in self.tasks},
        )

    def encode(self, arch: ViTArch) -> list[float]:
        """Fixed-length vector for predictors: dims, then per layer (heads, ratio, present, per-task flag)."""
        vec = [arch.embed_dim / max(self.embed_dims), arch.depth / max(self.depths)]
        for i in range(max(self.depths)):
            if i < arch.depth:
                vec += [
                    arch.num_heads[i] / max(self.num_heads),
                    arch.mlp_ratio[i] / max(self.mlp_ratios),
                    1.0,
                ]
                vec += [float(t in arch.task_specific[i]) for t in self.tasks]
            else:
                vec += [0.0, 0.0, 0.0] + [0.0] * len(self.tasks)
        vec += [arch.heads[t] / max(self.head_hidden) for t in self.tasks]
        return vec
