"""The AutoMTL space over a CNN's blocks and its genotype.

An arch says, for every block ("node") of a backbone after its stem and for every task, which of three
options the task's path takes there: the `shared` block, its own `specific` copy of the block, or `skip`
(identity, or a 1×1 projection where the block changes the shape). The nodes come from the backbone
(`mtnas.supernet.policy.split_blocks`); the space only knows their names.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mtnas.errors import ConfigError
from mtnas.space.arch_file import ArchFileSpace

OPTIONS = ("shared", "specific", "skip")  # index order of the policy logits


@dataclass(frozen=True)
class PolicyArch:
    """Per node (in backbone order) the option of every task: frozen and hashable."""

    nodes: tuple[str, ...]  # block names in the backbone, e.g. "layer2.1"
    choices: tuple[tuple[tuple[str, str], ...], ...]  # per node: sorted (task, option) pairs

    def __post_init__(self):
        if len(self.nodes) != len(self.choices):
            raise ValueError(f"{len(self.choices)} choices for {len(self.nodes)} blocks")
        for node, row in zip(self.nodes, self.choices, strict=True):
            for task, option in row:
                if option not in OPTIONS:
                    raise ValueError(f"block {node}: {task}: {option!r} is not one of {list(OPTIONS)}")

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.choices[0]) if self.choices else ()

    def option(self, node: int, task: str) -> str:
        return dict(self.choices[node])[task]

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML: one line per block, `{block: layer1.0, depth: shared, semseg: specific, ...}`."""
        return {
            "blocks": [{"block": n, **dict(row)} for n, row in zip(self.nodes, self.choices, strict=True)]
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicyArch:
        try:
            blocks = list(d["blocks"])
            nodes = tuple(str(b["block"]) for b in blocks)
            choices = tuple(
                tuple(sorted((str(t), str(o)) for t, o in b.items() if t != "block")) for b in blocks
            )
            return cls(nodes, choices)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError("arch", f"not a valid block-policy arch description ({e!s}).") from None

    def describe(self) -> str:
        """One line: `12 blocks · specific 3:depth 7:semseg+normal · skip 5:normal` (blocks from 1)."""
        parts = [f"{len(self.nodes)} blocks"]
        for option in ("specific", "skip"):
            where = [
                f"{i + 1}:{'+'.join(t for t, o in row if o == option)}"
                for i, row in enumerate(self.choices)
                if any(o == option for _, o in row)
            ]
            parts.append(f"{option} " + (" ".join(where) if where else "none"))
        return " · ".join(parts)


@dataclass(frozen=True)
class PolicySpace(ArchFileSpace):
    """Every (block, task) picks one of `options` (a subset of shared / specific / skip)."""

    arch_type = PolicyArch
    arch_file_what = "a block-policy arch file (a run's arch.yaml)"

    tasks: tuple[str, ...]
    nodes: tuple[str, ...]
    options: tuple[str, ...] = OPTIONS

    def __post_init__(self):
        if not self.nodes:
            raise ConfigError("model.backbone.name", "the backbone has no block to search after its stem.")
        if "shared" not in self.options or any(o not in OPTIONS for o in self.options):
            raise ConfigError(
                "method.policy.options",
                f"got {list(self.options)}; expected `shared` plus any of {list(OPTIONS)}.",
            )
        object.__setattr__(self, "tasks", tuple(sorted(self.tasks)))

    def arch(self, pick) -> PolicyArch:
        """The arch with option `pick(node_index, task)` everywhere."""
        return PolicyArch(
            self.nodes, tuple(tuple((t, pick(i, t)) for t in self.tasks) for i in range(len(self.nodes)))
        )

    def uniform(self, option: str) -> PolicyArch:
        return self.arch(lambda i, t: option)

    def largest(self, task_specific: bool = False) -> PolicyArch:
        return self.uniform("specific" if "specific" in self.options else "shared")

    def smallest(self) -> PolicyArch:
        return self.uniform("skip" if "skip" in self.options else "shared")

    def sample(self, rng: random.Random) -> PolicyArch:
        return self.arch(lambda i, t: rng.choice(self.options))

    def mutate(self, arch: PolicyArch, rng: random.Random) -> PolicyArch:
        node, task = rng.randrange(len(self.nodes)), rng.choice(self.tasks)
        current = arch.option(node, task)
        new = rng.choice([o for o in self.options if o != current] or [current])
        return self.arch(lambda i, t: new if (i, t) == (node, task) else arch.option(i, t))

    def crossover(self, a: PolicyArch, b: PolicyArch, rng: random.Random) -> PolicyArch:
        parents = [rng.choice((a, b)) for _ in self.nodes]
        return self.arch(lambda i, t: parents[i].option(i, t))

    def encode(self, arch: PolicyArch) -> list[float]:
        return [
            float(arch.option(i, t) == o) for i in range(len(self.nodes)) for t in self.tasks for o in OPTIONS
        ]

    def why_outside(self, arch: PolicyArch) -> str | None:
        if arch.nodes != self.nodes:
            return (
                f"its blocks {list(arch.nodes)[:4]}… are not this backbone's {list(self.nodes)[:4]}… "
                f"({len(arch.nodes)} vs {len(self.nodes)} blocks): it was searched on another backbone"
            )
        for node, row in zip(arch.nodes, arch.choices, strict=True):
            tasks = tuple(t for t, _ in row)
            if tasks != self.tasks:
                return f"block {node} gives options for {list(tasks)}, but the run's tasks are {list(self.tasks)}"
            for task, option in row:
                if option not in self.options:
                    return f"block {node}: {task}: {option} is not one of the allowed options {list(self.options)}"
        return None


def option_counts(arch: PolicyArch) -> dict[str, int]:
    counts = dict.fromkeys(OPTIONS, 0)
    for row in arch.choices:
        for _, option in row:
            counts[option] += 1
    return counts
