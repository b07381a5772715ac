"""MTNAS (method=two_stage): GDAS search steps of the cell supernet vs a plain training step of the largest
composite arch (every edge a 5×5 separable conv) as a static `CellNet`, on semseg + detection.

Rows (ratios measured in one run, to the plain step):
- weight step: gates sampled from the logits (one op per edge), weights trained;
- architecture step: the same with straight-through gates, so the logits get gradients too;
- branch-stage step: the frozen backbone runs once under no_grad and feeds every branch;
- soft DARTS step (every op on every edge, mixed): what hard sampling avoids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from bench_policy import _median  # warm-up runs, then the median

from mtnas.nn.cells import OPS
from mtnas.search.cost import count_params
from mtnas.search.gdas import ArchitectureLogits
from mtnas.space.cells import CellSpace
from mtnas.supernet.cells import CellLayout, CellSupernet
from mtnas.tasks import build_tasks

AVAILABLE = {
    "semseg": {"type": "semseg", "num_classes": 7},
    "detection": {"type": "detection", "num_classes": 4},
}


def _batch(b: int, size) -> dict:
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8]])
    return {
        "image": torch.rand(b, 3, *size),
        "semseg": torch.randint(0, 7, (b, *size)),
        "detection": [{"boxes": boxes, "labels": torch.tensor([0, 2])} for _ in range(b)],
    }


def main(size=(64, 64), batch_size: int = 16, repeats: int = 6, channels: int = 16):
    torch.manual_seed(0)
    tasks = build_tasks(list(AVAILABLE), AVAILABLE)
    layout = CellLayout(channels=channels, branch_channels=channels)
    ops = OPS[1:]
    net = CellSupernet(layout, ops, tasks)
    logits = ArchitectureLogits({g: net.table_shape for g in net.groups})
    space = CellSpace(tuple(tasks), ops, layout.nodes)
    largest = space.largest()
    static = net.extract(largest).train()
    batch = _batch(batch_size, size)

    def loss(preds):
        return sum(task.loss(preds[t], batch[t]) for t, task in tasks.items())

    def plain_step():
        static.zero_grad()
        loss(static(batch["image"])).backward()

    def weight_step():
        net.zero_grad()
        gates = {g: v.detach() for g, v in logits.sample(5.0).items()}
        loss(net(batch["image"], gates=gates)).backward()

    def arch_step():
        net.zero_grad()
        logits.zero_grad()
        loss(net(batch["image"], gates=logits.sample(5.0))).backward()

    fixed = net.gates_of(largest)

    def branch_step():
        net.zero_grad()
        gates = {**fixed, **{g: v for g, v in logits.sample(5.0).items() if g.startswith("branch/")}}
        with torch.no_grad():
            levels = net.features(batch["image"], gates)
        loss(net.heads(levels, size, gates)).backward()

    def soft_step():
        net.zero_grad()
        gates = {g: F.softmax(logits.table(g), -1) for g in net.groups}
        loss(net(batch["image"], gates=gates)).backward()

    base = _median(plain_step, repeats)
    rows = [
        (
            f"plain step, largest composite arch as a CellNet ({count_params(static) / 1e6:.2f} M)",
            base,
            "1.00",
        )
    ]
    for name, fn, n in (
        ("GDAS weight step (one sampled op per edge)", weight_step, repeats),
        ("GDAS architecture step (straight-through gates)", arch_step, repeats),
        ("branch-stage step (frozen backbone once, 2 branches)", branch_step, repeats),
        (f"soft DARTS step (all {len(ops)} ops on every edge)", soft_step, max(2, repeats // 2)),
    ):
        t = _median(fn, n)
        rows.append((name, t, f"{t / base:.2f}"))
    return rows


if __name__ == "__main__":
    for row in main():
        print(row)
