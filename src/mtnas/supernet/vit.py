"""AutoTaskFormer-style multi-task ViT supernet.

Per layer, each task runs either the shared block or its own task-specific copy. Tasks whose choices
agree on every layer so far are on the same *path* and share activations: each distinct (layer, path)
block runs once per forward, so a subnet with no task-specific layers costs one encoder pass, not T.
The extracted static model keeps exactly that tree of blocks (one block per distinct path node) and runs
the same routing code, which is what makes `extract(arch)(x) == supernet(x, arch)` hold exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mtnas.nn.elastic import (
    ElasticBlock,
    ElasticDenseHead,
    ElasticLayerNorm,
    ElasticPatchEmbed,
    compile_blocks,
)
from mtnas.space.vit import ViTArch, ViTSpace
from mtnas.tasks import image_level

if TYPE_CHECKING:
    from mtnas.tasks import Task

SHARED = "s"


def feature_layers(depth: int, num_levels: int = 3) -> list[int]:
    """Block indices whose outputs feed the dense heads: evenly spaced, ending at the last block."""
    return [max(0, depth * (k + 1) // num_levels - 1) for k in range(num_levels)]


def mlp_hidden(dim: int, ratio: float) -> int:
    return int(dim * ratio)


def routes(arch: ViTArch, tasks: list[str]) -> dict[str, list[str]]:
    """Per task, the id of its path node after each layer; equal ids = shared activations."""
    out = {}
    for t in tasks:
        key, keys = "", []
        for i in range(arch.depth):
            choice = t if t in arch.task_specific[i] else SHARED
            key = f"{key}-{choice}" if key else f"L0-{choice}"
            keys.append(key)
        out[t] = keys
    return out


def run_paths(
    x: Tensor,
    task_routes: Mapping[str, list[str]],
    block_fn: Callable[[int, str, str], Callable[[Tensor], Tensor]],
    out_layers: list[int],
    norm_fn: Callable[[Tensor], Tensor],
) -> dict[str, list[Tensor]]:
    """Run every distinct path once; return per task the normed token features at `out_layers`."""
    acts: dict[str, Tensor] = {"": x}
    normed: dict[str, Tensor] = {}
    feats: dict[str, list[Tensor]] = {t: [] for t in task_routes}
    depth = len(next(iter(task_routes.values())))
    for i in range(depth):
        new: dict[str, Tensor] = {}
        for t, r in task_routes.items():
            if r[i] not in new:
                new[r[i]] = block_fn(i, r[i], t)(acts[r[i - 1] if i else ""])
        acts = new
        if i in out_layers:
            for t, r in task_routes.items():
                if r[i] not in normed:
                    normed[r[i]] = norm_fn(acts[r[i]])
                feats[t].append(normed[r[i]])
    return feats


def tokens_to_map(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    b, _, d = tokens.shape
    return tokens[:, 1:].transpose(1, 2).reshape(b, d, *grid)


def vit_arch_params(
    arch,
    tasks: list[str],
    out_channels: dict[str, int],
    grid: tuple[int, int],
    patch_size: int,
    head_dim: int,
    num_levels: int = 3,
    in_chans: int = 3,
) -> int:
    """Parameters of a ViT supernet subnet, analytically (no module is built): equal to
    `count_params(supernet.extract(arch))`, tested."""
    d = arch.embed_dim
    n = in_chans * patch_size * patch_size * d + d + d + (1 + grid[0] * grid[1]) * d  # patch conv, cls, pos
    for i in _distinct_block_layers(arch, tasks):
        inner, hidden = arch.num_heads[i] * head_dim, mlp_hidden(d, arch.mlp_ratio[i])
        n += (
            2 * d
            + (d * 3 * inner + 3 * inner)
            + (inner * d + d)
            + 2 * d
            + (d * hidden + hidden)
            + (hidden * d + d)
        )
    n += 2 * d  # final norm
    for t in tasks:
        h, c = arch.heads[t], out_channels[t]
        n += num_levels * (d * h + h) + 2 * h + (9 * h * h + h) + 2 * h + (h * c + c)
    return n


def vit_arch_flops(
    arch,
    tasks: list[str],
    out_channels: dict[str, int],
    grid: tuple[int, int],
    patch_size: int,
    head_dim: int,
    num_levels: int = 3,
    in_chans: int = 3,
    image_level: Collection[str] = (),
) -> int:
    """FLOPs (2 per multiply-add) of one image through a ViT subnet, analytically; counts what torch's
    flop counter counts (matmuls, convolutions, attention), tested equal to `count_flops(extract(arch))`."""
    d, g = arch.embed_dim, grid[0] * grid[1]
    n_tok = g + 1
    f = 2 * g * in_chans * patch_size * patch_size * d
    for i in _distinct_block_layers(arch, tasks):
        inner, hidden = arch.num_heads[i] * head_dim, mlp_hidden(d, arch.mlp_ratio[i])
        f += 2 * n_tok * d * 3 * inner  # qkv
        f += 4 * n_tok * n_tok * inner  # q·kᵀ and attn·v
        f += 2 * n_tok * inner * d  # proj
        f += 4 * n_tok * d * hidden  # fc1 + fc2
    for t in tasks:
        h, c = arch.heads[t], out_channels[t]
        f += 2 * g * (num_levels * d * h + 9 * h * h)
        f += 2 * h * c * (1 if t in image_level else g)  # a pooled head predicts once, not per location
    return f


def _distinct_block_layers(arch, tasks: list[str]) -> list[int]:
    """Layer index of every block a subnet runs: one per distinct (layer, path) node."""
    return [i for i, _ in {(i, key) for r in routes(arch, tasks).values() for i, key in enumerate(r)}]


# `supernet.largest_sharing`: the sandwich's largest arch after the warm-up is hard sharing, or has its task-specific
# layers drawn at random at each step (`ViTSpace.with_sampled_sharing`).
LARGEST_SHARING = ("shared", "sampled")


def sandwich_archs(space: ViTSpace, task_specific_largest: bool = False) -> list[ViTArch]:
    """The archs the sandwich rule trains at every supernet step (after any shared warm-up): the largest (hard
    sharing at full size), the smallest and, with `task_specific_largest`, the largest with every layer
    task-specific. Their inherited scores are the supernet's most reliable, so searches start from them."""
    archs = [space.largest(), space.smallest()]
    specific = space.largest(task_specific=True)
    if task_specific_largest and specific not in archs:
        archs.append(specific)
    return archs


@dataclass(frozen=True)
class ViTCost:
    """Analytic params and FLOPs of any subnet of one ViT supernet geometry, without building a module
    (cheap enough to cost thousands of candidates); equal to counting the extracted subnet, tested."""

    tasks: tuple[str, ...]
    out_channels: tuple[tuple[str, int], ...]  # per task, sorted
    grid: tuple[int, int]
    patch_size: int
    head_dim: int
    image_level: frozenset[str] = frozenset()
    num_levels: int = 3

    @classmethod
    def of(
        cls, space: ViTSpace, tasks: Mapping[str, Task], image_size: tuple[int, int], patch_size: int
    ) -> ViTCost:
        return cls(
            tuple(tasks),
            tuple(sorted((t, task.out_channels) for t, task in tasks.items())),
            (image_size[0] // patch_size, image_size[1] // patch_size),
            patch_size,
            space.head_dim,
            image_level(tasks),
        )

    def __call__(self, arch: ViTArch) -> dict[str, int]:
        return dict(_vit_cost(self, arch))


@cache
def _vit_cost(model: ViTCost, arch: ViTArch) -> dict[str, int]:
    tasks, oc = list(model.tasks), dict(model.out_channels)
    geometry = (oc, model.grid, model.patch_size, model.head_dim, model.num_levels)
    return {
        "params": vit_arch_params(arch, tasks, *geometry),
        "flops": vit_arch_flops(arch, tasks, *geometry, image_level=model.image_level),
    }


class ViTSupernet(nn.Module):
    def __init__(
        self,
        space: ViTSpace,
        out_channels: Mapping[str, int],
        img_size: tuple[int, int],
        patch_size: int = 16,
        num_levels: int = 3,
        image_level: Collection[str] = (),
        head_strides: Mapping[str, int] | None = None,
    ):
        super().__init__()
        self.space = space
        self.image_level = frozenset(image_level)  # tasks with pooled heads (one prediction per image)
        strides = dict(head_strides or {})  # tasks predicting below the input size (Task.prediction_stride)
        self.tasks = list(space.tasks)
        self.num_levels = num_levels
        dim, heads, depth = max(space.embed_dims), max(space.num_heads), max(space.depths)
        if min(space.depths) < num_levels:
            raise ValueError(f"depth choices must be ≥ {num_levels} (one block per head feature level)")
        hidden = mlp_hidden(dim, max(space.mlp_ratios))
        self.embed = ElasticPatchEmbed(dim, img_size, patch_size)
        self.cost_model = ViTCost(
            tuple(self.tasks),
            tuple(sorted(out_channels.items())),
            self.embed.grid,
            patch_size,
            space.head_dim,
            self.image_level,
            num_levels,
        )
        self.blocks = nn.ModuleList(ElasticBlock(dim, heads, space.head_dim, hidden) for _ in range(depth))
        self.task_blocks = nn.ModuleDict(
            {
                t: nn.ModuleDict(
                    {str(i): copy.deepcopy(self.blocks[i]) for i in range(depth) if space.can_specialise(i)}
                )
                for t in self.tasks
            }
        )
        self.norm = ElasticLayerNorm(dim, eps=1e-6)
        self.heads = nn.ModuleDict(
            {
                t: nn.ModuleDict(
                    {
                        str(h): ElasticDenseHead(
                            dim, num_levels, h, out_channels[t], t in self.image_level, strides.get(t, 1)
                        )
                        for h in space.head_hidden
                    }
                )
                for t in self.tasks
            }
        )

    @property
    def grid(self) -> tuple[int, int]:
        return self.embed.grid

    def cost(self, arch: ViTArch) -> dict[str, int]:
        """Params and FLOPs of `extract(arch)`, analytically."""
        return self.cost_model(arch)

    def compile_blocks(self, backend: str = "inductor") -> None:
        """Run every block through compiled, shape-keyed variants (`nn.elastic.compile_blocks`)."""
        compile_blocks(backend)
        for m in self.modules():
            if isinstance(m, ElasticBlock):
                m.compiled = True

    def _block_fn(self, arch: ViTArch):
        def block(i: int, key: str, task: str):
            module = self.blocks[i] if key.endswith(f"-{SHARED}") else self.task_blocks[task][str(i)]
            dim, heads, hidden = (
                arch.embed_dim,
                arch.num_heads[i],
                mlp_hidden(arch.embed_dim, arch.mlp_ratio[i]),
            )
            return lambda x: module(x, dim, heads, hidden)

        return block

    def forward_features(self, images: Tensor, arch: ViTArch) -> dict[str, list[Tensor]]:
        """Per task, NCHW feature maps (final norm applied) of the head's input layers."""
        x = self.embed(images, arch.embed_dim)
        feats = run_paths(
            x,
            routes(arch, self.tasks),
            self._block_fn(arch),
            feature_layers(arch.depth, self.num_levels),
            lambda t: self.norm(t, arch.embed_dim),
        )
        return {t: [tokens_to_map(f, self.grid) for f in fs] for t, fs in feats.items()}

    def forward(
        self, images: Tensor, arch: ViTArch, output_size: tuple[int, int] | None = None
    ) -> dict[str, Tensor]:
        """Per-task predictions at the input resolution, or at `output_size` (cheaper training losses)."""
        size = output_size or images.shape[-2:]
        feats = self.forward_features(images, arch)
        return {t: self.heads[t][str(arch.heads[t])](feats[t], size, arch.embed_dim) for t in self.tasks}

    @torch.no_grad()
    def extract(self, arch: ViTArch) -> StaticMultiTaskViT:
        """A plain module with copies of exactly the weights `arch` uses."""
        why = self.space.why_outside(arch)
        if why:
            raise ValueError(f"arch is not in this supernet's space: {why}")
        task_routes = routes(arch, self.tasks)
        blocks = nn.ModuleDict()
        for t, r in task_routes.items():
            for i, key in enumerate(r):
                if key not in blocks:
                    src = self.blocks[i] if key.endswith(f"-{SHARED}") else self.task_blocks[t][str(i)]
                    blocks[key] = src.extract(
                        arch.embed_dim, arch.num_heads[i], mlp_hidden(arch.embed_dim, arch.mlp_ratio[i])
                    )
        heads = nn.ModuleDict(
            {t: self.heads[t][str(arch.heads[t])].extract(arch.embed_dim) for t in self.tasks}
        )
        return StaticMultiTaskViT(
            self.embed.extract(arch.embed_dim),
            blocks,
            task_routes,
            self.norm.extract(arch.embed_dim),
            heads,
            feature_layers(arch.depth, self.num_levels),
            self.grid,
        )

    @torch.no_grad()
    def load_timm_vit(self, vit: nn.Module, init_task_blocks: bool = True) -> None:
        """Load a timm `VisionTransformer` of the largest arch's size into the shared weights (and, by
        default, into every task-specific copy too, so they start from the same point)."""
        if len(vit.blocks) != len(self.blocks) or vit.embed_dim != self.embed.max_dim:
            raise ValueError(
                f"timm ViT has depth {len(vit.blocks)} / width {vit.embed_dim}; the supernet's largest arch "
                f"is depth {len(self.blocks)} / width {self.embed.max_dim}"
            )
        if vit.blocks[0].attn.qkv.weight.shape != self.blocks[0].qkv.weight.shape:
            raise ValueError(
                f"timm ViT qkv is {tuple(vit.blocks[0].attn.qkv.weight.shape)}, the supernet's "
                f"{tuple(self.blocks[0].qkv.weight.shape)}: heads × head dim must equal the embed dim"
            )
        self.embed.proj.load_state_dict(vit.patch_embed.proj.state_dict())
        self.embed.cls_token.copy_(vit.cls_token)
        self.embed.pos_embed.copy_(vit.pos_embed)
        for mine, theirs in zip(self.blocks, vit.blocks, strict=True):
            mine.norm1.load_state_dict(theirs.norm1.state_dict())
            mine.qkv.load_state_dict(theirs.attn.qkv.state_dict())
            mine.proj.load_state_dict(theirs.attn.proj.state_dict())
            mine.norm2.load_state_dict(theirs.norm2.state_dict())
            mine.fc1.load_state_dict(theirs.mlp.fc1.state_dict())
            mine.fc2.load_state_dict(theirs.mlp.fc2.state_dict())
        self.norm.load_state_dict(vit.norm.state_dict())
        if init_task_blocks:
            for per_task in self.task_blocks.values():
                for i, block in per_task.items():
                    block.load_state_dict(self.blocks[int(i)].state_dict())


class StaticMultiTaskViT(nn.Module):
    """An extracted subnet: `forward(images) -> dict[task, Tensor]`, no arch argument."""

    def __init__(
        self, embed, blocks: nn.ModuleDict, task_routes, norm, heads: nn.ModuleDict, out_layers, grid
    ):
        super().__init__()
        self.embed, self.blocks, self.norm, self.heads = embed, blocks, norm, heads
        self.task_routes = {t: list(r) for t, r in task_routes.items()}
        self.out_layers = list(out_layers)
        self.grid = tuple(grid)

    @classmethod
    def from_arch(
        cls,
        arch: ViTArch,
        out_channels: Mapping[str, int],
        img_size: tuple[int, int],
        patch_size: int,
        head_dim: int,
        num_levels: int = 3,
        image_level: Collection[str] = (),
        head_strides: Mapping[str, int] | None = None,
    ) -> StaticMultiTaskViT:
        """A freshly initialised subnet of this arch: the retrain-from-scratch model, and the skeleton
        that inherited weights (`supernet.extract(arch).state_dict()`) load into."""
        tasks = list(out_channels)
        task_routes = routes(arch, tasks)
        d = arch.embed_dim
        blocks = nn.ModuleDict()
        for r in task_routes.values():
            for i, key in enumerate(r):
                if key not in blocks:
                    blocks[key] = ElasticBlock(
                        d, arch.num_heads[i], head_dim, mlp_hidden(d, arch.mlp_ratio[i])
                    )
        embed = ElasticPatchEmbed(d, img_size, patch_size)
        heads = nn.ModuleDict(
            {
                t: ElasticDenseHead(
                    d,
                    num_levels,
                    arch.heads[t],
                    out_channels[t],
                    t in image_level,
                    dict(head_strides or {}).get(t, 1),
                )
                for t in tasks
            }
        )
        norm = ElasticLayerNorm(d, eps=1e-6)
        return cls(
            embed, blocks, task_routes, norm, heads, feature_layers(arch.depth, num_levels), embed.grid
        )

    def forward(self, images: Tensor, output_size: tuple[int, int] | None = None) -> dict[str, Tensor]:
        feats = run_paths(
            self.embed(images),
            self.task_routes,
            lambda i, key, t: self.blocks[key],
            self.out_layers,
            self.norm,
        )
        size = output_size or images.shape[-2:]
        return {t: self.heads[t]([tokens_to_map(f, self.grid) for f in fs], size) for t, fs in feats.items()}


def build_vit_subnet(
    arch: Mapping[str, Any] | ViTArch,
    tasks: Mapping[str, Task],
    image_size: tuple[int, int],
    patch_size: int,
    head_dim: int,
    num_levels: int = 3,
) -> StaticMultiTaskViT:
    """The model spec target of a searched ViT subnet (`{_target_: ..., arch: {...}, patch_size, head_dim}`):
    what a retrained subnet's checkpoint stores, so any code can rebuild it without knowing the method."""
    if not isinstance(arch, ViTArch):
        arch = ViTArch.from_dict(arch)
    model = StaticMultiTaskViT.from_arch(
        arch,
        {t: task.out_channels for t, task in tasks.items()},
        tuple(image_size),
        int(patch_size),
        int(head_dim),
        int(num_levels),
        image_level(tasks),
        {t: task.prediction_stride for t, task in tasks.items()},
    )
    for t, task in tasks.items():
        task.init_head(model.heads[t])
    return model


def subnet_spec(arch: ViTArch, patch_size: int, head_dim: int, num_levels: int = 3) -> dict[str, Any]:
    """The model spec (`_target_` mapping) of `arch` as a static model."""
    return {
        "_target_": f"{__name__}.build_vit_subnet",
        "arch": arch.to_dict(),
        "patch_size": int(patch_size),
        "head_dim": int(head_dim),
        "num_levels": int(num_levels),
    }
