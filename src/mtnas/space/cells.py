"""MTNAS's cell space and its composite arch (DARTS-style cells; DESIGN.md §4, two_stage).

A *genotype* is one cell: per intermediate node, two (op, source) pairs — source 0 / 1 are the cell's two
inputs, 2 + j is node j. A composite `CellArch` is the backbone's normal and reduction genotypes (every
backbone cell of a kind shares one, as in DARTS) plus one branch genotype per task (the cells of that task's
branch). `derive_genotype` turns a cell's architecture weights into a genotype, with the collapse guard.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mtnas.errors import ConfigError
from mtnas.nn.cells import OPS, edge_index
from mtnas.space.arch_file import ArchFileSpace

Genotype = tuple[tuple[tuple[str, int], tuple[str, int]], ...]  # per node: two (op, source)
SHORT = {
    "max_pool_3x3": "max",
    "avg_pool_3x3": "avg",
    "skip_connect": "skip",
    "sep_conv_3x3": "sep3",
    "sep_conv_5x5": "sep5",
    "dil_conv_3x3": "dil3",
    "dil_conv_5x5": "dil5",
}
# Ops from fewest to most parameters at equal channels (for the space's smallest / largest archs).
SIZE_ORDER = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "sep_conv_3x3",
    "sep_conv_5x5",
)


def genotype_from(value: Any, what: str) -> Genotype:
    """A genotype from YAML: a list of nodes, each `[[op, source], [op, source]]`."""
    try:
        nodes = tuple(tuple((str(op), int(src)) for op, src in node) for node in value)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{what}: expected a list of nodes, each [[op, source], [op, source]] ({e})"
        ) from None
    for i, node in enumerate(nodes):
        if len(node) != 2:
            raise ValueError(f"{what}: node {i} has {len(node)} inputs; a node has exactly 2")
        for op, src in node:
            if op not in OPS or op == "none":
                raise ValueError(f"{what}: node {i}: {op!r} is not an op of {list(OPS[1:])}")
            if not 0 <= src < 2 + i:
                raise ValueError(f"{what}: node {i}: source {src} must be 0..{1 + i} (inputs, earlier nodes)")
    return nodes  # type: ignore[return-value]


def describe_genotype(g: Genotype) -> str:
    return " ".join("+".join(f"{SHORT[op]}({src})" for op, src in node) for node in g)


@dataclass(frozen=True)
class CellArch:
    """A composite arch: backbone genotypes (`normal`, `reduce`) + one branch genotype per task."""

    normal: Genotype
    reduce: Genotype
    branches: tuple[tuple[str, Genotype], ...]  # sorted by task

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.branches)

    def branch(self, task: str) -> Genotype:
        return dict(self.branches)[task]

    def groups(self) -> dict[str, Genotype]:
        """Every genotype by group name: `normal`, `reduce`, `branch/<task>`."""
        return {"normal": self.normal, "reduce": self.reduce, **{f"branch/{t}": g for t, g in self.branches}}

    @classmethod
    def from_groups(cls, groups: Mapping[str, Genotype]) -> CellArch:
        branches = tuple(
            sorted((k.split("/", 1)[1], g) for k, g in groups.items() if k.startswith("branch/"))
        )
        return cls(groups["normal"], groups["reduce"], branches)

    def to_dict(self) -> dict[str, Any]:
        def plain(g: Genotype) -> list:
            return [[[op, src] for op, src in node] for node in g]

        return {
            "backbone": {"normal": plain(self.normal), "reduce": plain(self.reduce)},
            "branches": {t: plain(g) for t, g in self.branches},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CellArch:
        try:
            backbone, branches = d["backbone"], d["branches"]
            return cls(
                genotype_from(backbone["normal"], "backbone.normal"),
                genotype_from(backbone["reduce"], "backbone.reduce"),
                tuple(sorted((str(t), genotype_from(g, f"branches.{t}")) for t, g in branches.items())),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError("arch", f"not a cell arch description (missing or malformed {e!s}).") from None
        except ValueError as e:
            raise ConfigError("arch", f"not a valid cell arch: {e}.") from None

    def describe(self) -> str:
        """One line: `N sep3(0)+skip(1) … · R … · semseg: … · detection: …` (node by node)."""
        parts = [f"N {describe_genotype(self.normal)}", f"R {describe_genotype(self.reduce)}"]
        return " · ".join(parts + [f"{t}: {describe_genotype(g)}" for t, g in self.branches])


def derive_genotype(
    weights: Sequence[Sequence[float]], ops: Sequence[str], nodes: int, max_skip: int | None = None
) -> Genotype:
    """DARTS's discretisation of one cell's architecture weights (edges × ops, e.g. softmax of the logits):
    per node the two incoming edges with the strongest op other than `none`, each with that op.

    Collapse guard (as DARTS+ / P-DARTS): differentiable search drifts towards parameter-free skip
    connections, which give a cell that learns nothing. With `max_skip`, while the cell has more skip
    connections than that, the weakest one is replaced by its edge's best op that is not skip (or none)."""
    names = list(ops)
    usable = [o for o, name in enumerate(names) if name != "none"]
    chosen: list[list[tuple[float, int, int]]] = []  # per node: (strength, source, op)
    for i in range(nodes):
        candidates = []
        for s in range(2 + i):
            row = weights[edge_index(i, s)]
            o = max(usable, key=lambda k: float(row[k]))
            candidates.append((float(row[o]), s, o))
        chosen.append(sorted(candidates, key=lambda c: (-c[0], c[1]))[:2])
    if max_skip is not None and "skip_connect" in names:
        skip = names.index("skip_connect")
        others = [o for o in usable if o != skip]
        while others:
            skips = [
                (c[0], i, k) for i, node in enumerate(chosen) for k, c in enumerate(node) if c[2] == skip
            ]
            if len(skips) <= max_skip:
                break
            _, i, k = min(skips)
            _, s, _ = chosen[i][k]
            row = weights[edge_index(i, s)]
            o = max(others, key=lambda j: float(row[j]))
            chosen[i][k] = (float(row[o]), s, o)
    return tuple(tuple((names[o], s) for _, s, o in sorted(node, key=lambda c: c[1])) for node in chosen)  # type: ignore[return-value]


def count_op(g: Genotype, op: str) -> int:
    return sum(name == op for node in g for name, _ in node)


@dataclass(frozen=True)
class CellSpace(ArchFileSpace):
    """Composite archs over `ops` (without `none`) with `nodes` nodes per cell, for `tasks`."""

    arch_type = CellArch
    arch_file_what = "a cell arch file (a two_stage run's arch.yaml)"

    tasks: tuple[str, ...]
    ops: tuple[str, ...]
    nodes: int = 4

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(sorted(self.tasks)))
        object.__setattr__(self, "ops", tuple(o for o in self.ops if o != "none"))
        if not self.ops:
            raise ConfigError("method.ops", f"expected at least one op other than none, of {list(OPS)}.")

    def _arch(self, make) -> CellArch:
        groups = ["normal", "reduce", *(f"branch/{t}" for t in self.tasks)]
        return CellArch.from_groups({g: make(g) for g in groups})

    def _uniform(self, op: str) -> Genotype:
        return tuple(((op, 0), (op, 1)) for _ in range(self.nodes))  # type: ignore[return-value]

    def largest(self, task_specific: bool = False) -> CellArch:
        op = max(self.ops, key=SIZE_ORDER.index)
        return self._arch(lambda g: self._uniform(op))

    def smallest(self) -> CellArch:
        op = min(self.ops, key=SIZE_ORDER.index)
        return self._arch(lambda g: self._uniform(op))

    def uniform(self, op: str) -> CellArch:
        return self._arch(lambda g: self._uniform(op))

    def sample_genotype(self, rng: random.Random) -> Genotype:
        return tuple(
            tuple((rng.choice(self.ops), s) for s in sorted(rng.sample(range(2 + i), 2)))
            for i in range(self.nodes)
        )  # type: ignore[return-value]

    def sample(self, rng: random.Random) -> CellArch:
        return self._arch(lambda g: self.sample_genotype(rng))

    def mutate(self, arch: CellArch, rng: random.Random) -> CellArch:
        """One input of one node of one genotype gets another op or another source."""
        groups = arch.groups()
        name = rng.choice(sorted(groups))
        nodes = [list(node) for node in groups[name]]
        i, k = rng.randrange(self.nodes), rng.randrange(2)
        op, src = nodes[i][k]
        other_src = [s for s in range(2 + i) if s not in (nodes[i][0][1], nodes[i][1][1])]
        if other_src and rng.random() < 0.5:
            src = rng.choice(other_src)
        else:
            op = rng.choice([o for o in self.ops if o != op] or [op])
        nodes[i][k] = (op, src)
        groups[name] = tuple(tuple(sorted(node, key=lambda p: p[1])) for node in nodes)
        return CellArch.from_groups(groups)

    def crossover(self, a: CellArch, b: CellArch, rng: random.Random) -> CellArch:
        ga, gb = a.groups(), b.groups()
        return CellArch.from_groups({k: rng.choice((ga[k], gb[k])) for k in ga})

    def encode(self, arch: CellArch) -> list[float]:
        out: list[float] = []
        for _, g in sorted(arch.groups().items()):
            for i, node in enumerate(g):
                for op, src in node:
                    out += [float(op == o) for o in self.ops] + [float(src == s) for s in range(2 + i)]
        return out

    def why_outside(self, arch: CellArch) -> str | None:
        if arch.tasks != self.tasks:
            return f"it has branches for {list(arch.tasks)}, but the run's tasks are {list(self.tasks)}"
        for name, g in arch.groups().items():
            if len(g) != self.nodes:
                return (
                    f"{name} has {len(g)} nodes; this space's cells have {self.nodes} (method.network.nodes)"
                )
            for i, node in enumerate(g):
                for op, _ in node:
                    if op not in self.ops:
                        return f"{name} node {i} uses {op}, not one of method.ops={list(self.ops)}"
        return None
