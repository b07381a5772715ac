"""AutoMTL's supernet: any timm CNN whose blocks are, per task, shared / task-specific / skipped.

`split_blocks` finds the blocks of a timm model generically: it walks the model's children in order and
opens a container (a stage, a `Sequential`) when running its children one after the other gives the
container's own output, down to modules that own a convolution directly (a residual block, an inverted
residual, a ConvNeXt block, a conv-BN-act). The leading modules up to the first such block are the stem
(always shared); every later module with weights is a node. Feature levels are read where timm's
`feature_info` taps them, so the heads are the static hard-sharing net's (`mtnas.nn.multitask`).

Tasks whose paths are identical so far share activations: a forward pass costs one pass per distinct path.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from mtnas.errors import ConfigError
from mtnas.space.policy import OPTIONS, PolicyArch, PolicySpace

if TYPE_CHECKING:
    from mtnas.tasks import Task

LAYERS = (nn.Conv2d, nn.Linear)


# -- finding the blocks ---------------------------------------------------------------------------------
def _owns_layer(m: nn.Module) -> bool:
    return isinstance(m, LAYERS) or any(isinstance(c, LAYERS) for c in m.children())


def _has_layer(m: nn.Module) -> bool:
    return any(isinstance(c, LAYERS) for c in m.modules())


@torch.no_grad()
def _open(items: list[tuple[str, nn.Module]], x: Tensor) -> tuple[list[tuple[str, nn.Module]], Tensor]:
    """`items` run in order from `x`, with every container whose children compose to it opened."""
    out = []
    for name, module in items:
        children = list(module.named_children())
        if children and not _owns_layer(module) and _has_layer(module):
            ref, y = module(x.clone()), x.clone()
            try:
                for _, child in children:
                    y = child(y)
                composes = (
                    isinstance(y, Tensor) and y.shape == ref.shape and torch.allclose(y, ref, 1e-4, 1e-5)
                )
            except (RuntimeError, TypeError, ValueError):
                composes = False
            if composes:
                opened, x = _open([(f"{name}.{n}", c) for n, c in children], x)
                out += opened
                continue
        out.append((name, module))
        x = module(x)
    return out, x


@dataclass
class BlockChain:
    """A backbone as a chain of steps: `nodes[j]` is the node index of step j (None: a stem or weightless
    step, always shared), features are tapped after the steps in `taps` (with their channels and
    strides), `shapes[j]` is step j's (input, output) shape on one image of the run's size."""

    names: list[str]
    modules: list[nn.Module]
    nodes: list[int | None]
    taps: list[int]
    channels: list[int]
    reductions: list[int]
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]]

    @property
    def node_steps(self) -> list[int]:
        return [j for j, n in enumerate(self.nodes) if n is not None]


def split_blocks(model: nn.Module, image_size: tuple[int, int], name: str = "the backbone") -> BlockChain:
    """The chain of `model` (a timm model with `feature_info`) on images of `image_size`."""
    info = getattr(model, "feature_info", None)
    if not info or not isinstance(info, list | tuple):
        raise ConfigError(
            "model.backbone.name", f"{name} has no timm feature_info: it cannot be split into blocks."
        )
    tapped = [str(f["module"]) for f in info]
    top = []
    for child_name, child in model.named_children():
        top.append((child_name, child))
        if child_name == tapped[-1] or tapped[-1].startswith(child_name + "."):
            break
    for m in model.modules():  # one input may feed several options: nothing may overwrite it
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    was_training = model.training
    model.eval()
    x = torch.randn(1, 3, *image_size, generator=torch.Generator().manual_seed(0))
    try:
        steps, _ = _open(top, x)
    except (RuntimeError, TypeError, ValueError, AssertionError) as err:
        raise ConfigError(
            "model.backbone.name", f"{name} does not run on {image_size[0]}×{image_size[1]} images: {err}"
        ) from None
    model.train(was_training)
    names, modules = [n for n, _ in steps], [m for _, m in steps]
    first = next((j for j, m in enumerate(modules) if _has_layer(m)), None)
    stem_end = (
        next((j for j in range(first + 1, len(modules)) if _has_layer(modules[j])), None)
        if first is not None
        else None
    )
    if stem_end is None:
        raise ConfigError("model.backbone.name", f"{name} has no block after its stem: nothing to search.")
    nodes: list[int | None] = []
    for j, m in enumerate(modules):
        has_weights = any(True for _ in m.parameters())
        nodes.append(sum(n is not None for n in nodes) if j >= stem_end and has_weights else None)
    shapes, taps = [], []
    with torch.no_grad():
        model.eval()
        y = x
        for m in modules:
            out = m(y)
            shapes.append((tuple(y.shape), tuple(out.shape)))
            y = out
        model.train(was_training)
    for f in tapped:
        found = [j for j, n in enumerate(names) if n == f or n.startswith(f + ".")]
        if not found:
            raise ConfigError(
                "model.backbone.name",
                f"{name}: timm taps its features at `{f}`, which is inside a block mtnas cannot open; "
                "method=automtl cannot split this model (use e.g. resnet18, mobilenetv3_large_100, efficientnet_b0).",
            )
        taps.append(max(found))
    for j in taps:
        out = shapes[j][1]
        if len(out) != 4:
            raise ConfigError(
                "model.backbone.name",
                f"{name}'s blocks do not give (N, C, H, W) feature maps (its features have shape {list(out)}): "
                "method=automtl splits a CNN (e.g. resnet18, mobilenetv3_large_100, efficientnet_b0, convnext_atto).",
            )
    return BlockChain(
        names,
        modules,
        nodes,
        taps,
        [shapes[j][1][1] for j in taps],
        [int(f["reduction"]) for f in info],
        shapes,
    )


def projection(in_shape: Sequence[int], out_shape: Sequence[int]) -> nn.Module | None:
    """What `skip` runs at a node: nothing when the node keeps the shape, else a 1×1 conv + BN that changes
    channels and stride as the block does."""
    if tuple(in_shape) == tuple(out_shape):
        return None
    stride = max(1, math.ceil(in_shape[-1] / out_shape[-1]))
    return nn.Sequential(
        nn.Conv2d(in_shape[1], out_shape[1], 1, stride=stride, bias=False), nn.BatchNorm2d(out_shape[1])
    )


# -- the routed network -------------------------------------------------------------------------------
@dataclass
class ChainLayout:
    """What routing needs to know of a chain (plain data: it is copied into every extracted subnet)."""

    tasks: list[str]
    node_names: list[str]
    step_nodes: list[int | None]
    taps: list[int]
    task_bn: bool = False  # shared blocks keep one BatchNorm per task (AutoMTL's default)

    def option_key(self, option: str, task: str) -> str:
        """What a task's option computes: specific copies, and shared blocks with per-task BatchNorms, run
        per task; a shared block or a projection runs once for the tasks on the same path."""
        per_task = option == "specific" or (option == "shared" and self.task_bn)
        return f"{option}/{task}" if per_task else option


class TaskBatchNorm(nn.Module):
    """The BatchNorm of a shared block, one per task: `active` says whose runs (the router sets it)."""

    def __init__(self, norm: nn.Module, tasks: list[str]):
        super().__init__()
        self.norms = nn.ModuleDict({t: copy.deepcopy(norm) for t in tasks})
        self.active = tasks[0]

    def forward(self, x: Tensor) -> Tensor:
        return self.norms[self.active](x)


def with_task_norms(block: nn.Module, tasks: list[str]) -> nn.Module:
    """`block` with each BatchNorm replaced by a `TaskBatchNorm` over `tasks` (in place; a block that is a
    BatchNorm itself is wrapped)."""
    if isinstance(block, nn.modules.batchnorm._BatchNorm):
        return TaskBatchNorm(block, tasks)
    for module in list(block.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, child_name, TaskBatchNorm(child, tasks))
    return block


def set_task(block: nn.Module, task: str) -> None:
    for m in block.modules():
        if isinstance(m, TaskBatchNorm):
            m.active = task


class BlockRouter(nn.Module):
    """Stem and weightless steps (`fixed`), per node the `shared` block, per task `specific` copies and the
    `skip` projection (only those a model holds), and the task heads. Each task follows its own options."""

    def __init__(self, layout: ChainLayout, fixed, shared, specific, skip, heads):
        super().__init__()
        self.layout = layout
        self.fixed, self.shared, self.specific, self.skip, self.heads = fixed, shared, specific, skip, heads

    def run_option(self, node: int, option: str, task: str, x: Tensor) -> Tensor:
        key = str(node)
        if option == "shared":
            if self.layout.task_bn:
                set_task(self.shared[key], task)
            return self.shared[key](x)
        if option == "specific":
            return self.specific[key][task](x)
        return self.skip[key](x) if key in self.skip else x

    def route(
        self,
        x: Tensor,
        option_of: Callable[[int, str], str],
        output_size: tuple[int, int] | None = None,
        gate: Callable[[int, str, list[str], Tensor], Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Every task along its options; tasks on the same path so far share one computation per step.
        `gate(node, option, tasks, y)` may rescale a computed output (straight-through policy gradients)."""
        tasks = self.layout.tasks
        acts: dict[int, Tensor] = {0: x}
        where = dict.fromkeys(tasks, 0)
        feats: dict[str, list[Tensor]] = {t: [] for t in tasks}
        fresh = 1
        for j, node in enumerate(self.layout.step_nodes):
            if node is None:
                acts = {k: self.fixed[str(j)](v) for k, v in acts.items()}
            else:
                groups: dict[tuple[int, str], list[str]] = {}
                for t in tasks:
                    option = option_of(node, t)
                    key = self.layout.option_key(option, t)
                    # Gated (policy steps): each task on its own path, so that its logits' straight-through
                    # gradient comes from its own loss only, as in AutoMTL.
                    groups.setdefault((where[t], key if gate is None else f"{key}|{t}"), []).append(t)
                new: dict[int, Tensor] = {}
                for (src, key), members in groups.items():
                    option = key.split("|")[0].split("/")[0]
                    y = self.run_option(node, option, members[0], acts[src])
                    new[fresh] = gate(node, option, members, y) if gate is not None else y
                    for t in members:
                        where[t] = fresh
                    fresh += 1
                acts = new
            if j in self.layout.taps:
                for t in tasks:
                    feats[t].append(acts[where[t]])
        size = output_size or x.shape[-2:]
        return {t: self.heads[t](feats[t], size) for t in tasks}


class PolicySubnet(BlockRouter):
    """A fixed arch as a plain model: `forward(images) -> dict[task, Tensor]`; it holds only the blocks,
    copies and projections its arch uses."""

    def __init__(self, arch: PolicyArch, layout: ChainLayout, fixed, shared, specific, skip, heads):
        super().__init__(layout, fixed, shared, specific, skip, heads)
        self.arch = arch
        self._options = {(i, t): o for i, row in enumerate(arch.choices) for t, o in row}

    def forward(self, images: Tensor, output_size: tuple[int, int] | None = None) -> dict[str, Tensor]:
        return self.route(images, lambda i, t: self._options[(i, t)], output_size)


class PolicySupernet(BlockRouter):
    """Every option of every node, the heads, and the policy: logits per (node, task, option), zero at the
    start (`policy_parameters()`). `forward(x, arch)` runs one arch; `forward_soft` mixes the options."""

    def __init__(
        self,
        backbone: Mapping[str, Any],
        tasks: Mapping[str, Task],
        image_size: tuple[int, int],
        head: Mapping[str, Any] | None = None,
        min_reduction: int = 4,
        options: Sequence[str] = OPTIONS,
        task_bn: bool = False,
    ):
        chain, modules, costs = build_parts(
            backbone, tasks, image_size, head, min_reduction, needs=None, task_bn=task_bn, options=options
        )
        super().__init__(chain, *modules)
        self.costs = costs
        self.space = PolicySpace(tuple(tasks), tuple(chain.node_names), tuple(options))
        # Logits in the space's (sorted) task order; options outside the space are masked out.
        self.policy_logits = nn.Parameter(
            torch.zeros(len(chain.node_names), len(self.space.tasks), len(OPTIONS))
        )
        mask = torch.tensor([0.0 if o in self.space.options else -math.inf for o in OPTIONS])
        self.register_buffer("option_mask", mask, persistent=False)

    # -- parameters ---------------------------------------------------------------------------------
    def policy_parameters(self) -> list[nn.Parameter]:
        return [self.policy_logits]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "policy_logits"]

    def probabilities(self) -> Tensor:
        return F.softmax(self.policy_logits + self.option_mask, dim=-1)

    # -- archs ----------------------------------------------------------------------------------------
    def arch_of(self, index: Tensor) -> PolicyArch:
        """The arch of option indices (nodes × tasks)."""
        index = index.tolist()
        return self.space.arch(lambda i, t: OPTIONS[index[i][self.space.tasks.index(t)]])

    def export(self) -> PolicyArch:
        """The most probable arch (ties go to `shared`, the first option)."""
        return self.arch_of((self.policy_logits + self.option_mask).argmax(-1))

    def sample_arch(self, generator: torch.Generator) -> PolicyArch:
        probs = self.probabilities().detach().cpu().reshape(-1, len(OPTIONS))
        index = torch.multinomial(probs, 1, generator=generator).reshape(self.policy_logits.shape[:2])
        return self.arch_of(index)

    def gumbel_gates(self, tau: float) -> Tensor:
        """A straight-through Gumbel-softmax sample (one-hot in value, soft gradients), from the global RNG."""
        return F.gumbel_softmax(self.policy_logits + self.option_mask, tau=tau, hard=True, dim=-1)

    # -- forward ------------------------------------------------------------------------------------
    def forward(
        self,
        images: Tensor,
        arch: PolicyArch | None = None,
        output_size: tuple[int, int] | None = None,
        gates: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One arch (`arch`, or the options `gates` pick). With `gates` (one-hot, with gradients), each computed
        output is multiplied by 1 + Σ (gate − gate.detach()) over the tasks that share it: 1 in value, the
        straight-through gradient to those tasks' logits."""
        order = {t: k for k, t in enumerate(self.space.tasks)}
        if gates is not None:
            chosen = gates.detach().argmax(-1).tolist()

            def option_of(i: int, t: str) -> str:
                return OPTIONS[chosen[i][order[t]]]

            def gate(i: int, option: str, members: list[str], y: Tensor) -> Tensor:
                o = OPTIONS.index(option)
                g = gates[i, [order[t] for t in members], o]
                return y * (1 + (g - g.detach()).sum())

            return self.route(images, option_of, output_size, gate)
        if arch is None:
            arch = self.export()
        options = {(i, t): o for i, row in enumerate(arch.choices) for t, o in row}
        return self.route(images, lambda i, t: options[(i, t)], output_size)

    def forward_soft(
        self, images: Tensor, weights: Tensor, output_size: tuple[int, int] | None = None
    ) -> dict[str, Tensor]:
        """Every option of every node, mixed per task with `weights` (nodes × tasks × options): AutoMTL's
        pre-training (uniform weights over the allowed options) and its soft policy. Options of weight 0
        are not computed; identical inputs are computed once."""
        tasks = self.layout.tasks
        order = {t: k for k, t in enumerate(self.space.tasks)}
        acts = dict.fromkeys(tasks, images)
        feats: dict[str, list[Tensor]] = {t: [] for t in tasks}

        def once(cache: dict, x: Tensor, key: str, fn: Callable[[], Tensor]) -> Tensor:
            if (id(x), key) not in cache:
                cache[(id(x), key)] = fn()
            return cache[(id(x), key)]

        for j, node in enumerate(self.layout.step_nodes):
            cache: dict[tuple[int, str], Tensor] = {}
            new = {}
            for t in tasks:
                x = acts[t]
                if node is None:
                    new[t] = once(cache, x, "fixed", lambda x=x, j=j: self.fixed[str(j)](x))
                    continue
                w = weights[node, order[t]]
                mixed = None
                for o, option in enumerate(OPTIONS):
                    if option not in self.space.options or float(w[o].detach()) == 0.0:
                        continue
                    key = self.layout.option_key(option, t)
                    y = once(cache, x, key, lambda x=x, o=option, t=t, n=node: self.run_option(n, o, t, x))
                    mixed = w[o] * y if mixed is None else mixed + w[o] * y
                new[t] = mixed
            acts = new
            if j in self.layout.taps:
                for t in tasks:
                    feats[t].append(acts[t])
        size = output_size or images.shape[-2:]
        return {t: self.heads[t](feats[t], size) for t in tasks}

    def uniform_weights(self) -> Tensor:
        allowed = torch.isfinite(self.option_mask).float()
        w = allowed / allowed.sum()
        return w.expand(*self.policy_logits.shape).to(self.policy_logits.device)

    # -- the policy's loss terms ----------------------------------------------------------------------
    def sharing_regulariser(self, slope: float = 1.0) -> Tensor:
        """AutoMTL's push towards sharing, harder for early blocks: Σ_t Σ_v (D − v)/D · [softplus(s·(g_specific −
        g_shared)) + softplus(s·(g_skip − g_shared))], v = 0 … D−1 the node's depth, g the logits (options
        outside the space left out)."""
        g = self.policy_logits
        depth = g.shape[0]
        weight = (depth - torch.arange(depth, device=g.device, dtype=g.dtype)) / depth
        total = g.new_zeros(())
        for option in ("specific", "skip"):
            if option in self.space.options:
                o = OPTIONS.index(option)
                total = total + (weight[:, None] * F.softplus(slope * (g[..., o] - g[..., 0]))).sum()
        return total

    def expected_cost(self, key: str = "params") -> Tensor:
        """The expected params (exact) or FLOPs (tasks on the same option counted as sharing its input: a lower
        bound) of an arch drawn from the policy, differentiable in the logits."""
        p = self.probabilities()
        c = {k: torch.as_tensor(v, dtype=p.dtype, device=p.device) for k, v in self.costs[key].items()}
        used_shared = 1 - torch.prod(1 - p[..., 0], dim=1)
        used_skip = 1 - torch.prod(1 - p[..., 2], dim=1)
        nodes = used_shared * c["node"] + p[..., 1].sum(1) * c["node"] + used_skip * c["skip"]
        if self.layout.task_bn:  # a BatchNorm per task on the shared block, which then runs per task
            extra = p[..., 0].sum(1) - used_shared
            nodes = nodes + extra * (c["bn"] if key == "params" else c["node"])
        return c["fixed"] + c["heads"].sum() + nodes.sum()

    @torch.no_grad()
    def recalibrate(self, arch: PolicyArch, batches: Sequence[Tensor]) -> None:
        """Reset the BatchNorm statistics of every module and re-estimate them on `batches` (images) along
        `arch`'s paths: the statistics a block kept while every option was mixed or sampled are not those of
        one arch, and scoring archs with them ranks them poorly."""
        from mtnas.supernet.norms import recalibrate_batchnorm

        recalibrate_batchnorm(self, lambda x: self(x, arch), batches)

    # -- cost and extraction ------------------------------------------------------------------------
    def cost(self, arch: PolicyArch) -> dict[str, int]:
        return arch_cost(arch, self.layout, self.costs)

    def extract(self, arch: PolicyArch) -> PolicySubnet:
        """A static model of `arch` holding copies of exactly the weights it uses."""
        keep = needed_options(arch)
        shared = nn.ModuleDict({k: m for k, m in self.shared.items() if "shared" in keep[int(k)]})
        specific = nn.ModuleDict(
            {
                k: nn.ModuleDict({t: m for t, m in copies.items() if t in keep[int(k)]})
                for k, copies in self.specific.items()
                if any(t in keep[int(k)] for t in copies)
            }
        )
        skip = nn.ModuleDict({k: m for k, m in self.skip.items() if "skip" in keep[int(k)]})
        sub = PolicySubnet(arch, copy.deepcopy(self.layout), self.fixed, shared, specific, skip, self.heads)
        sub = copy.deepcopy(sub)
        for k, block in sub.shared.items():
            keep_norms(block, [t for t, o in arch.choices[int(k)] if o == "shared"])
        return sub


def keep_norms(block: nn.Module, tasks: list[str]) -> None:
    """Drop the per-task BatchNorms of tasks that do not use this shared block."""
    for m in block.modules():
        if isinstance(m, TaskBatchNorm):
            for t in [t for t in m.norms if t not in tasks]:
                del m.norms[t]
            m.active = next(iter(m.norms))


def needed_options(arch: PolicyArch) -> list[set[str]]:
    """Per node: `shared` / `skip` when a task takes them, `shared/<task>` for each task on the shared block,
    and the names of tasks with a specific copy."""
    need = []
    for row in arch.choices:
        options = {o if o != "specific" else t for t, o in row}
        need.append(options | {f"shared/{t}" for t, o in row if o == "shared"})
    return need


def arch_cost(
    arch: PolicyArch, layout: ChainLayout, costs: Mapping[str, Mapping[str, Any]]
) -> dict[str, int]:
    """Params and FLOPs of `arch` from the per-step tables: shared blocks and projections once, specific
    copies per task; FLOPs once per distinct path through each step."""
    params = costs["params"]["fixed"] + sum(costs["params"]["heads"])
    flops = costs["flops"]["heads_total"]
    paths = {t: () for t in layout.tasks}
    for j, node in enumerate(layout.step_nodes):
        if node is None:
            flops += costs["flops"]["steps"][j] * len(set(paths.values()))
            continue
        row = dict(arch.choices[node])
        on_shared = sum(o == "shared" for o in row.values())
        if on_shared:
            node_bn = costs["params"]["bn"][node]
            params += costs["params"]["node"][node] + (node_bn * (on_shared - 1) if layout.task_bn else 0)
        if "skip" in row.values():
            params += costs["params"]["skip"][node]
        params += costs["params"]["node"][node] * sum(o == "specific" for o in row.values())
        computed = set()
        for t in layout.tasks:
            option = row[t]
            key = (paths[t], layout.option_key(option, t))
            if key not in computed:
                computed.add(key)
                flops += costs["flops"]["node" if option != "skip" else "skip"][node]
            paths[t] = paths[t] + (key[1],)
    return {"params": int(params), "flops": int(flops)}


# -- building ------------------------------------------------------------------------------------------
def create_backbone(backbone: Mapping[str, Any], image_size: tuple[int, int]) -> nn.Module:
    """The whole timm model (`model.backbone`: name, optional local `checkpoint`, timm kwargs)."""
    import timm

    from mtnas.nn.backbone import _is_vit_like

    cfg = dict(backbone)
    name = cfg.pop("name")
    checkpoint = cfg.pop("checkpoint", None)
    cfg.pop("out_indices", None)
    if _is_vit_like(name):  # refused by split_blocks, with the reason, once built
        cfg.setdefault("img_size", tuple(image_size))
    if name not in timm.list_models():
        raise ConfigError(
            "model.backbone.name", f"{name!r} is not a timm model name (see timm.list_models())."
        )
    if checkpoint:
        path = Path(str(checkpoint)).expanduser()
        if not path.is_file():
            raise ConfigError("model.backbone.checkpoint", f"weights file {checkpoint} does not exist.")
        cfg.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    try:
        return timm.create_model(name, **cfg)
    except (TypeError, RuntimeError, ValueError) as e:
        raise ConfigError("model.backbone", f"timm could not build {name!r}: {e}") from None


def _wanted(needs, node: int, tasks: list[str], options: Sequence[str] = OPTIONS) -> set[str]:
    if needs is None:  # every option the space allows
        want = {"shared", *(f"shared/{t}" for t in tasks)}
        return (
            want
            | ({"skip"} if "skip" in options else set())
            | (set(tasks) if "specific" in options else set())
        )
    return needs(node) if callable(needs) else needs[node]


def build_parts(
    backbone: Mapping[str, Any],
    tasks: Mapping[str, Task],
    image_size: tuple[int, int],
    head: Mapping[str, Any] | None,
    min_reduction: int,
    needs: list[set[str]] | Callable[[int], set[str]] | None,
    task_bn: bool = False,
    options: Sequence[str] = OPTIONS,
):
    """The layout, the modules (fixed, shared, specific, skip, heads) and the cost tables of a chain;
    `needs` (per node, as `needed_options`, or a function of the node) limits the modules to one arch's,
    None builds every option."""
    from mtnas.utils.checks import positive_int

    head = dict(head or {})
    positive_int("model.min_reduction", min_reduction)
    name = str(backbone.get("name"))
    chain = split_blocks(
        create_backbone(backbone, tuple(image_size)), tuple(image_size), f"model.backbone.name={name}"
    )
    levels = [k for k, r in enumerate(chain.reductions) if r >= int(min_reduction)] or [len(chain.taps) - 1]
    taps = [chain.taps[k] for k in levels]
    task_names = list(tasks)  # the run's order: outputs are ordered like every other model's
    node_steps = chain.node_steps
    layout = ChainLayout(task_names, [chain.names[j] for j in node_steps], list(chain.nodes), taps, task_bn)
    fixed = nn.ModuleDict({str(j): m for j, m in enumerate(chain.modules) if chain.nodes[j] is None})
    shared, specific, skip = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
    projections = {}
    for i, j in enumerate(node_steps):
        want = _wanted(needs, i, task_names, options)
        block = chain.modules[j]
        copies = {t: copy.deepcopy(block) for t in task_names if t in want}
        if "shared" in want:
            on_shared = [t for t in task_names if f"shared/{t}" in want]
            shared[str(i)] = with_task_norms(copy.deepcopy(block), on_shared) if task_bn else block
        if copies:
            specific[str(i)] = nn.ModuleDict(copies)
        projections[i] = projection(*chain.shapes[j])
        if "skip" in want and projections[i] is not None:
            skip[str(i)] = projections[i]
    in_ch = [chain.channels[k] for k in levels]
    heads = nn.ModuleDict({t: tasks[t].build_head(in_ch, **head) for t in task_names})
    return (
        layout,
        (fixed, shared, specific, skip, heads),
        chain_costs(chain, layout, projections, heads, image_size),
    )


@torch.no_grad()
def chain_costs(chain: BlockChain, layout: ChainLayout, projections, heads, image_size) -> dict[str, Any]:
    """Per-step params and FLOPs (one image), counted once when the chain is built."""

    def flops(fn: Callable[[], Any]) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        return int(counter.get_total_flops())

    def count(m: nn.Module | None) -> int:
        return 0 if m is None else sum(p.numel() for p in m.parameters())

    modules = [*chain.modules, *[p for p in projections.values() if p is not None], *heads.values()]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    x = torch.randn(1, 3, *image_size, generator=torch.Generator().manual_seed(0))
    step_flops, feats, node_params, node_flops, skip_params, skip_flops = [], [], [], [], [], []
    bn_params: list[int] = []
    fixed_params = 0
    for j, m in enumerate(chain.modules):
        step_flops.append(flops(lambda m=m, x=x: m(x)))
        y = m(x)
        if chain.nodes[j] is None:
            fixed_params += count(m)
        else:
            i = chain.nodes[j]
            node_params.append(count(m))
            bn_params.append(
                sum(count(b) for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm))
            )
            node_flops.append(step_flops[-1])
            p = projections[i]
            skip_params.append(count(p))
            skip_flops.append(flops(lambda p=p, x=x: p(x)) if p is not None else 0)
        x = y
        if j in layout.taps:
            feats.append(y)
    head_params = [count(heads[t]) for t in layout.tasks]
    head_flops = [flops(lambda t=t: heads[t](feats, tuple(image_size))) for t in layout.tasks]
    for m, mode in zip(modules, modes, strict=True):
        m.train(mode)
    steps = [f if n is None else 0 for f, n in zip(step_flops, chain.nodes, strict=True)]
    stem = sum(steps)  # weightless steps after the stem (pooling, identity) count no FLOPs
    return {
        "params": {
            "fixed": fixed_params,
            "node": node_params,
            "bn": bn_params,
            "skip": skip_params,
            "heads": head_params,
        },
        "flops": {
            "fixed": stem,
            "node": node_flops,
            "skip": skip_flops,
            "heads": head_flops,
            "heads_total": sum(head_flops),
            "steps": steps,
        },
    }


def build_policy_subnet(
    arch: Mapping[str, Any] | PolicyArch,
    backbone: Mapping[str, Any],
    tasks: Mapping[str, Task],
    image_size: tuple[int, int],
    head: Mapping[str, Any] | None = None,
    min_reduction: int = 4,
    task_bn: bool = False,
) -> PolicySubnet:
    """The model spec target of a searched block-policy arch: the retrain-from-scratch model (from local
    timm weights when `backbone.checkpoint` is set) and the skeleton inherited weights load into."""
    if not isinstance(arch, PolicyArch):
        arch = PolicyArch.from_dict(arch)
    layout, modules, _ = build_parts(
        backbone, tasks, image_size, head, min_reduction, needs=needed_options(arch), task_bn=bool(task_bn)
    )
    if layout.node_names != list(arch.nodes) or sorted(layout.tasks) != sorted(arch.tasks):
        raise ConfigError(
            "arch",
            f"the arch's blocks/tasks do not match model.backbone.name={backbone.get('name')} and the run's tasks.",
        )
    return PolicySubnet(arch, layout, *modules)


def layout_and_costs(
    model: Mapping[str, Any], tasks: Mapping[str, Task], image_size: tuple[int, int], task_bn: bool = False
) -> tuple[ChainLayout, dict[str, Any]]:
    """The chain layout and cost tables of a `model` spec's backbone and heads, with no option built."""
    layout, _, costs = build_parts(
        model["backbone"],
        tasks,
        image_size,
        model.get("head"),
        int(model.get("min_reduction", 4)),
        lambda i: set(),
        task_bn,
    )
    return layout, costs


def policy_subnet_spec(arch: PolicyArch, model: Mapping[str, Any], task_bn: bool = False) -> dict[str, Any]:
    """The model spec (`_target_` mapping) of `arch` on the `model` spec's backbone and heads."""
    return {
        "_target_": f"{__name__}.build_policy_subnet",
        "arch": arch.to_dict(),
        "backbone": dict(model["backbone"]),
        "head": dict(model.get("head") or {}),
        "min_reduction": int(model.get("min_reduction", 4)),
        "task_bn": bool(task_bn),
    }
