"""Differentiable architecture search with hard Gumbel sampling (GDAS, Dong & Yang 2019), for any space whose
choices are categorical: named groups of (choices × options) logits, e.g. a cell's edges × ops.

First-order DARTS relaxes each choice to a softmax over its options and trains the logits by gradient on
held-out data; GDAS samples one option per choice with the straight-through Gumbel-softmax, so a step runs
one path (forward cost of a single arch) while the logits still get gradients. This module knows nothing of
models: a supernet reads the sampled one-hot gates, and the method alternates weight and logit steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gumbel_hard(logits: Tensor, tau: float, generator: torch.Generator | None = None) -> Tensor:
    """One-hot samples per row (straight-through: the forward value is exactly 0/1, the gradient the soft
    sample's). `generator` makes the draw reproducible."""
    uniform = torch.rand(logits.shape, generator=generator, device="cpu").to(logits.device)
    gumbel = -torch.log((-torch.log(uniform.clamp_min(1e-20))).clamp_min(1e-20))
    soft = F.softmax((logits + gumbel) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


class ArchitectureLogits(nn.Module):
    """The architecture parameters: one (choices, options) logit table per named group, initialised to zero
    (every option equally likely). Group names may contain '/' (stored escaped)."""

    def __init__(self, shapes: Mapping[str, tuple[int, int]]):
        super().__init__()
        self.names = list(shapes)
        self.logits = nn.ParameterDict({_key(n): nn.Parameter(torch.zeros(*s)) for n, s in shapes.items()})

    def table(self, name: str) -> Tensor:
        return self.logits[_key(name)]

    def probabilities(self) -> dict[str, Tensor]:
        return {n: F.softmax(self.table(n), -1) for n in self.names}

    def sample(self, tau: float, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return {n: gumbel_hard(self.table(n), tau, generator) for n in self.names}

    def entropy(self) -> Tensor:
        """Mean entropy of the choices, normalised to [0, 1] (1 = undecided, 0 = one option everywhere)."""
        values = []
        for p in self.probabilities().values():
            values.append(-(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(p.shape[-1]))
        return torch.cat(values).mean()

    def expected(self, costs: Mapping[str, Tensor], scale: Mapping[str, Tensor] | None = None) -> Tensor:
        """Σ over groups of Σ_choice Σ_option p · cost (each choice weighted by `scale[group]` when given,
        e.g. the share of a node's edges a derived cell keeps)."""
        probs = self.probabilities()
        total = next(iter(self.logits.values())).new_zeros(())
        for n, cost in costs.items():
            per_choice = (probs[n] * cost.to(probs[n])).sum(-1)
            if scale is not None:
                per_choice = per_choice * scale[n].to(per_choice)
            total = total + per_choice.sum()
        return total


def tau_at(step: int, total: int, tau_max: float, tau_min: float) -> float:
    """GDAS's temperature schedule: linear from `tau_max` to `tau_min` over `total` steps."""
    return tau_max - (tau_max - tau_min) * min(1.0, step / max(1, total))


def _key(name: str) -> str:
    return name.replace("/", "__")
