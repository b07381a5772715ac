"""AutoMTL: a policy-training step vs one hard-sharing step of the same backbone and tasks, and the throughput
of an extracted subnet vs the static hard-sharing net of about its params.

Rows (ratios measured in one run):
- weight step (an arch sampled from the policy; only the chosen options run, tasks on identical paths share
  activations): about as many backbone passes as the arch has distinct paths;
- policy step (straight-through Gumbel): each task on its own path, so that its logits learn from its own loss;
- soft policy step (every option of every block, mixed): the 3 × T backbone passes hard sampling avoids;
- extracted subnet forward vs hard sharing, for an arch with one task specific in the second half of the net.
"""

from __future__ import annotations

import statistics
import time

import torch
from bench_train_step import AVAILABLE, hard_sharing_module, synthetic_batch  # the same tasks and model

from mtnas.search.cost import count_params
from mtnas.supernet.policy import PolicySupernet


def _median(fn, repeats: int) -> float:
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        fn()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(backbone: str = "mobilenetv3_small_100", size=(96, 128), batch_size: int = 16, repeats: int = 6):
    torch.manual_seed(0)
    static = hard_sharing_module(list(AVAILABLE), backbone, size)
    tasks = static.tasks
    net = PolicySupernet({"name": backbone}, tasks, size, {"hidden": 32}, 4)
    batch = synthetic_batch(batch_size, size)

    def loss(preds):
        return sum(task.loss(preds[t], batch[t]) for t, task in tasks.items())

    def hard_sharing_step():
        static.zero_grad()
        total, _ = static._losses(static(batch["image"]), batch)
        total.backward()

    paths = []

    def sampled_arch():
        gates = net.gumbel_gates(tau=5.0)
        arch = net.arch_of(gates.detach().argmax(-1))
        routes = {
            tuple(arch.option(i, t) if arch.option(i, t) != "specific" else t for i in range(len(arch.nodes)))
            for t in arch.tasks
        }
        paths.append(len(routes))
        return gates, arch

    def weight_step():  # the sampled arch; tasks on the same path share its computation
        net.zero_grad()
        _, arch = sampled_arch()
        loss(net(batch["image"], arch)).backward()

    def hard_policy_step():  # straight-through gates; each task on its own path (its own gradients)
        net.zero_grad()
        gates, _ = sampled_arch()
        loss(net(batch["image"], gates=gates)).backward()

    def soft_policy_step():
        net.zero_grad()
        gates = torch.nn.functional.gumbel_softmax(net.policy_logits, tau=5.0, hard=False, dim=-1)
        loss(net.forward_soft(batch["image"], gates)).backward()

    base = _median(hard_sharing_step, repeats)
    weights = _median(weight_step, repeats)
    hard = _median(hard_policy_step, repeats)
    soft = _median(soft_policy_step, max(2, repeats // 2))
    # Extracted subnet: depth specific in the second half of the blocks, everything else shared.
    half = len(net.space.nodes) // 2
    arch = net.space.arch(lambda i, t: "specific" if (t == "depth" and i >= half) else "shared")
    sub = net.extract(arch).eval()
    static.eval()
    with torch.no_grad():
        fwd_sub = _median(lambda: sub(batch["image"]), repeats)
        fwd_static = _median(lambda: static(batch["image"]), repeats)
    rows = [
        ("hard-sharing step (fwd+bwd)", base, "1.00"),
        (
            f"weight step, sampled arch (mean {statistics.mean(paths):.1f} distinct paths of {len(tasks)} tasks)",
            weights,
            f"{weights / base:.2f}",
        ),
        (f"policy step, hard Gumbel ({len(tasks)} task paths)", hard, f"{hard / base:.2f}"),
        (f"policy step, soft (all 3 options × {len(tasks)} tasks)", soft, f"{soft / base:.2f}"),
        ("hard-sharing forward (eval)", fwd_static, "1.00"),
        (
            f"extracted subnet forward ({count_params(sub) / 1e6:.2f} M vs {count_params(static.model) / 1e6:.2f} M params)",
            fwd_sub,
            f"{fwd_sub / fwd_static:.2f}",
        ),
    ]
    return rows


if __name__ == "__main__":
    for row in main():
        print(row)
