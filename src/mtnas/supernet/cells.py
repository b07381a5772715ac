"""MTNAS's networks of DARTS cells: the static multi-task net of a composite arch (`CellNet`), the weight-sharing
supernet every stage searches (`CellSupernet`), and the classification net of the backbone pre-search
(`CellClassifier`).

Macro structure (`CellLayout`): a stride-4 stem, then `layers` backbone cells, the reduction cells at 1/3 and
2/3 of the depth (strides 4 → 8 → 16) or at `reductions`; the output of the last cell at each stride is a feature
level. Each task's branch fuses the levels at 1/`branch_stride` of the input (1×1 conv per level, resized, summed; the
top-down fusion MTNAS's heads read from the segmentation decoder, here given to every task), runs
`branch_cells` cells of its own genotype, and ends in the task's head (`Task.build_head`, no refinement).

Invariant (tested): in eval mode `extract(arch)(x) == supernet(x, arch)`, and `cost(arch)` equals counting the
extracted net; `cost` is the sum of a fixed part and a per-(group, edge, op) table counted once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mtnas.nn.cells import Cell, MixedCell, edge_index, num_edges
from mtnas.nn.heads import conv_bn_relu, fuse_levels
from mtnas.space.cells import CellArch, CellSpace, Genotype
from mtnas.utils.checks import positive_int

if TYPE_CHECKING:
    from mtnas.tasks import Task


@dataclass(frozen=True)
class CellLayout:
    channels: int = 16  # cell channels at stride 4 (doubled at each reduction); a cell outputs nodes × that
    layers: int = 5  # backbone cells
    nodes: int = 4  # intermediate nodes per cell
    branch_channels: int = 16  # cell channels in each branch
    branch_cells: int = 1
    branch_stride: int = 4  # branches run at 1/branch_stride of the input size
    head_hidden: int = 64
    reductions: tuple[int, ...] | None = (
        None  # indices of the reduction cells; None: at 1/3 and 2/3 of the depth
    )

    def __post_init__(self):
        for key, minimum in (("channels", 2), ("layers", 3), ("nodes", 1), ("branch_channels", 2)):
            positive_int(f"method.network.{key}", getattr(self, key), minimum)
        positive_int("method.network.branch_cells", self.branch_cells)
        positive_int("method.network.head_hidden", self.head_hidden)
        if self.branch_stride not in (4, 8, 16):
            from mtnas.errors import ConfigError

            raise ConfigError(
                "method.network.branch_stride", f"got {self.branch_stride!r}; expected 4, 8 or 16."
            )

        if self.reductions is not None:
            cells = self.reductions
            ok = isinstance(cells, list | tuple) and all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.layers for i in cells
            )
            if not ok or not cells or len(set(cells)) != len(cells):
                from mtnas.errors import ConfigError

                raise ConfigError(
                    "method.network.reductions",
                    f"got {cells!r}; expected null or one or more distinct cell indices in 0..{self.layers - 1} "
                    "(method.network.layers cells), e.g. [1, 3].",
                )
            object.__setattr__(self, "reductions", tuple(sorted(cells)))

    def to_config(self) -> dict[str, Any]:
        """As plain YAML data (checkpoints' hyper-parameters, model specs)."""
        config = asdict(self)
        if self.reductions is not None:
            config["reductions"] = list(self.reductions)
        return config

    @property
    def reduction_cells(self) -> tuple[int, ...]:
        return self.reductions if self.reductions is not None else (self.layers // 3, 2 * self.layers // 3)


# -- building blocks ---------------------------------------------------------------------------------
class CellStack(nn.Module):
    """The backbone: stem then cells; `forward(x, gates)` → the feature levels (finest first). `make_cell(c_pp,
    c_p, c, reduction, reduction_prev)` builds each cell (a `Cell` of a genotype or a `MixedCell`)."""

    def __init__(self, layout: CellLayout, make_cell):
        super().__init__()
        c = layout.channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, c, 3, 2, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False),
            nn.BatchNorm2d(2 * c),
        )
        c_pp = c_p = 2 * c
        reduction_prev = False
        self.cells = nn.ModuleList()
        self.level_after: list[int] = []
        self.channels: list[int] = []
        for i in range(layout.layers):
            reduction = i in layout.reduction_cells
            if reduction:
                c *= 2
                if i > 0 and (i - 1) not in self.level_after:
                    self.level_after.append(i - 1)
                    self.channels.append(c_p)
            self.cells.append(make_cell(c_pp, c_p, c, reduction, reduction_prev))
            c_pp, c_p, reduction_prev = c_p, layout.nodes * c, reduction
        self.level_after.append(layout.layers - 1)
        self.channels.append(c_p)

    def forward(self, x: Tensor, gates: Mapping[str, Tensor] | None = None) -> list[Tensor]:
        s0 = s1 = self.stem(x)
        levels = []
        for i, cell in enumerate(self.cells):
            if gates is None:
                s0, s1 = s1, cell(s0, s1)
            else:
                s0, s1 = s1, cell(s0, s1, gates["reduce" if cell.reduction else "normal"])
            if i in self.level_after:
                levels.append(s1)
        return levels


class Branch(nn.Module):
    """One task's branch: fuse the levels at 1/`stride` of the input, run its cells, predict with its head."""

    def __init__(self, layout: CellLayout, level_channels: Sequence[int], task: Task, make_cell):
        super().__init__()
        c = layout.branch_channels
        self.stride = layout.branch_stride
        self.fuse = nn.ModuleList(conv_bn_relu(ch, c * layout.nodes, 1) for ch in level_channels)
        self.cells = nn.ModuleList()
        c_pp = c_p = c * layout.nodes
        for _ in range(layout.branch_cells):
            self.cells.append(make_cell(c_pp, c_p, c, False, False))
            c_pp = c_p = layout.nodes * c
        self.head = task.build_head([c_p], hidden=layout.head_hidden, refine_layers=0)

    def forward(
        self,
        levels: Sequence[Tensor],
        image_size: tuple[int, int],
        output_size: tuple[int, int],
        gates: Tensor | None = None,
    ) -> Tensor:
        s0 = s1 = fuse_levels(self.fuse, levels, (image_size[0] // self.stride, image_size[1] // self.stride))
        for cell in self.cells:
            s0, s1 = s1, (cell(s0, s1) if gates is None else cell(s0, s1, gates))
        return self.head([s1], output_size)


def genotype_gates(genotype: Genotype, ops: Sequence[str]) -> Tensor:
    """A genotype as a cell's (edges, ops) gate table: 1 at each chosen (edge, op), 0 elsewhere."""
    table = torch.zeros(num_edges(len(genotype)), len(ops))
    for i, node in enumerate(genotype):
        for op, src in node:
            table[edge_index(i, src), list(ops).index(op)] = 1.0
    return table


def _genotype_cell(genotype: Genotype):
    return lambda c_pp, c_p, c, red, red_prev: Cell(genotype, c_pp, c_p, c, red, red_prev)


def _mixed_cell(nodes: int, ops: Sequence[str]):
    return lambda c_pp, c_p, c, red, red_prev: MixedCell(nodes, ops, c_pp, c_p, c, red, red_prev)


# -- the static net of a composite arch ----------------------------------------------------------------
class CellNet(nn.Module):
    """`forward(images) -> dict[task, pred]`: the static multi-task net of one composite arch."""

    def __init__(self, arch: CellArch, layout: CellLayout, tasks: Mapping[str, Task]):
        super().__init__()
        genotypes = {"normal": arch.normal, "reduce": arch.reduce}

        def backbone_cell(c_pp, c_p, c, red, red_prev):
            return Cell(genotypes["reduce" if red else "normal"], c_pp, c_p, c, red, red_prev)

        self.backbone = CellStack(layout, backbone_cell)
        self.branches = nn.ModuleDict(
            {
                t: Branch(layout, self.backbone.channels, task, _genotype_cell(arch.branch(t)))
                for t, task in tasks.items()
            }
        )

    def forward(self, images: Tensor, output_size: tuple[int, int] | None = None) -> dict[str, Tensor]:
        levels = self.backbone(images)
        hw = tuple(images.shape[-2:])
        return {t: b(levels, hw, output_size or hw) for t, b in self.branches.items()}


def build_cell_net(
    arch: Mapping[str, Any],
    tasks: Mapping[str, Task],
    image_size: tuple[int, int],
    network: Mapping[str, Any],
) -> CellNet:
    """The model spec target of a searched composite arch: `{_target_, arch: <arch.yaml>, network: {...}}`."""
    return CellNet(CellArch.from_dict(arch), CellLayout(**dict(network)), tasks)


def cell_net_spec(arch: CellArch, layout: CellLayout) -> dict[str, Any]:
    return {
        "_target_": "mtnas.supernet.cells.build_cell_net",
        "arch": arch.to_dict(),
        "network": layout.to_config(),
    }


# -- the supernet ---------------------------------------------------------------------------------------
class CellSupernet(nn.Module):
    """Every op on every edge of every cell; `forward(images, arch)` runs one composite arch, and
    `forward(images, gates=...)` the per-group (edges, ops) gates a search step samples."""

    def __init__(self, layout: CellLayout, ops: Sequence[str], tasks: Mapping[str, Task]):
        super().__init__()
        self.layout, self.ops, self.task_names = layout, tuple(ops), list(tasks)
        self.backbone = CellStack(layout, _mixed_cell(layout.nodes, self.ops))
        self.branches = nn.ModuleDict(
            {
                t: Branch(layout, self.backbone.channels, task, _mixed_cell(layout.nodes, self.ops))
                for t, task in tasks.items()
            }
        )
        self._tasks = dict(tasks)
        self._costs: dict[str, Any] | None = None
        self.space = CellSpace(tuple(tasks), self.ops, layout.nodes)

    @property
    def groups(self) -> list[str]:
        return ["normal", "reduce", *(f"branch/{t}" for t in self.task_names)]

    @property
    def table_shape(self) -> tuple[int, int]:
        return (num_edges(self.layout.nodes), len(self.ops))

    def gates_of(self, arch: CellArch) -> dict[str, Tensor]:
        """One-hot (edges, ops) tables of an arch's genotypes."""
        return {name: genotype_gates(g, self.ops) for name, g in arch.groups().items()}

    def features(self, images: Tensor, gates: Mapping[str, Tensor]) -> list[Tensor]:
        return self.backbone(images, {k: _on(gates[k], images) for k in ("normal", "reduce")})

    def heads(
        self,
        levels: Sequence[Tensor],
        image_size: tuple[int, int],
        gates: Mapping[str, Tensor],
        output_size: tuple[int, int] | None = None,
        tasks: Sequence[str] | None = None,
    ) -> dict[str, Tensor]:
        size = output_size or image_size
        return {
            t: self.branches[t](levels, image_size, size, _on(gates[f"branch/{t}"], levels[0]))
            for t in (tasks or self.task_names)
        }

    def forward(
        self,
        images: Tensor,
        arch: CellArch | None = None,
        output_size: tuple[int, int] | None = None,
        gates: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        gates = self.gates_of(arch) if gates is None else gates
        hw = tuple(images.shape[-2:])
        return self.heads(self.features(images, gates), hw, gates, output_size)

    # -- extraction -------------------------------------------------------------------------------------
    def extract(self, arch: CellArch) -> CellNet:
        """A static `CellNet` of `arch` holding copies of exactly the weights it uses."""
        net = CellNet(arch, self.layout, self._tasks)
        source = self.state_dict()
        groups = arch.groups()
        pattern = re.compile(r"^(backbone|branches\.([^.]+))\.cells\.(\d+)\.ops\.(\d+)\.(\d+)\.(.*)$")
        state = {}
        for key in net.state_dict():
            m = pattern.match(key)
            if m is None:
                state[key] = source[key]
                continue
            where, task, cell, node, k, rest = m.groups()
            if task is None:
                group = "reduce" if self.backbone.cells[int(cell)].reduction else "normal"
            else:
                group = f"branch/{task}"
            op, src = groups[group][int(node)][int(k)]
            e, o = edge_index(int(node), src), self.ops.index(op)
            state[key] = source[f"{where}.cells.{cell}.edges.{e}.{o}.{rest}"]
        net.load_state_dict(state)
        return net.to(next(self.parameters()).device)

    # -- cost -----------------------------------------------------------------------------------------------
    def cost_tables(self, image_size: tuple[int, int]) -> dict[str, Any]:
        """Params and FLOPs of the parts every arch has (`fixed`) and, per group, an (edges, ops) table of each
        op's params and FLOPs summed over the group's cells: one counted forward with every op active (on the
        meta device: no memory, no compute)."""
        from torch.utils.flop_counter import FlopCounterMode

        if self._costs is not None and self._costs["image_size"] == tuple(image_size):
            return self._costs
        with torch.device("meta"):
            meta = CellSupernet(self.layout, self.ops, self._tasks).eval()
        ones = {g: torch.ones(self.table_shape) for g in self.groups}
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            meta(torch.zeros(1, 3, *image_size, device="meta"), gates=ones)
        per_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
        root = type(meta).__name__
        tables = {
            g: {"params": torch.zeros(self.table_shape), "flops": torch.zeros(self.table_shape)}
            for g in self.groups
        }
        for where, cells in [("backbone", meta.backbone.cells)] + [
            (f"branches.{t}", b.cells) for t, b in meta.branches.items()
        ]:
            for c, cell in enumerate(cells):
                group = (
                    ("reduce" if cell.reduction else "normal")
                    if where == "backbone"
                    else f"branch/{where.split('.', 1)[1]}"
                )
                for e, ops in enumerate(cell.edges):
                    for o, op in enumerate(ops):
                        tables[group]["params"][e, o] += sum(p.numel() for p in op.parameters())
                        tables[group]["flops"][e, o] += per_module.get(
                            f"{root}.{where}.cells.{c}.edges.{e}.{o}", 0
                        )
        total_params = sum(p.numel() for p in meta.parameters())
        fixed = {
            "params": total_params - sum(float(t["params"].sum()) for t in tables.values()),
            "flops": counter.get_total_flops() - sum(float(t["flops"].sum()) for t in tables.values()),
        }
        self._costs = {"image_size": tuple(image_size), "fixed": fixed, "tables": tables}
        return self._costs

    def cost(self, arch: CellArch, image_size: tuple[int, int]) -> dict[str, float]:
        return arch_cost(arch, self.cost_tables(image_size), self.ops)

    def edge_keep_share(self) -> Tensor:
        """Per edge, the share of its node's edges a derived cell keeps (2 of the node's 2 + i)."""
        return torch.tensor([2 / (2 + i) for i in range(self.layout.nodes) for _ in range(2 + i)])


def _on(gates: Tensor, like: Tensor) -> Tensor:
    """Gates on the activations' device (kept on the CPU for a meta-device costing pass)."""
    return gates if like.device.type == "meta" else gates.to(like.device)


def arch_cost(arch: CellArch, costs: Mapping[str, Any], ops: Sequence[str]) -> dict[str, float]:
    """Fixed part + the chosen (edge, op) entries of each group's tables."""
    out = dict(costs["fixed"])
    for group, g in arch.groups().items():
        for i, node in enumerate(g):
            for op, src in node:
                e, o = edge_index(i, src), list(ops).index(op)
                for key in ("params", "flops"):
                    out[key] += float(costs["tables"][group][key][e, o])
    return {k: float(round(v)) for k, v in out.items()}


class CellClassifier(nn.Module):
    """The backbone pre-search's net: the supernet's backbone (same module layout, so its weights load into
    `CellSupernet.backbone`), global pooling and a linear classifier."""

    def __init__(self, layout: CellLayout, ops: Sequence[str], num_classes: int):
        super().__init__()
        self.ops = tuple(ops)
        self.backbone = CellStack(layout, _mixed_cell(layout.nodes, self.ops))
        self.classifier = nn.Linear(self.backbone.channels[-1], num_classes)

    def forward(self, images: Tensor, gates: Mapping[str, Tensor]) -> Tensor:
        return self.classifier(self.backbone(images, gates)[-1].mean((2, 3)))
