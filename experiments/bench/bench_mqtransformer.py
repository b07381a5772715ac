"""MQTransformer's training step and forward vs hard sharing on the same backbone, batch and tasks.

One fwd+bwd+AdamW step each (as `bench_train_step.py`), and an eval forward; reported as ratios to hard
sharing measured in one run. Two decoder sizes: the synthetic recipe's (dim 64, 16 queries per task) and the
paper's (dim 256, 64 queries)."""

from __future__ import annotations

import statistics
import time

import torch
from bench_train_step import AVAILABLE, _step_time, hard_sharing_module, synthetic_batch

from mtnas.lit.multitask import MultiTaskLitModule


def mqtransformer_module(tasks, backbone, size, dim: int, num_queries: int):
    spec = {
        "_target_": "mtnas.nn.mqtransformer.build_mqtransformer",
        "backbone": {"name": backbone},
        "dim": dim,
        "num_queries": num_queries,
        "head_hidden": 32,
    }
    return MultiTaskLitModule(tasks, AVAILABLE, spec, {"lr": 1e-3}, {"weighting": "fixed"}, size)


@torch.no_grad()
def _forward_time(module, images, repeats):
    module.eval()
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        module(images)
        if i >= 2:
            times.append(time.perf_counter() - t)
    module.train()
    return statistics.median(times)


def main(backbone: str = "mobilenetv3_small_100", size=(96, 128), batch_size: int = 16, repeats: int = 6):
    torch.manual_seed(0)
    batch = synthetic_batch(batch_size, size)
    tasks = list(AVAILABLE)
    hard = hard_sharing_module(tasks, backbone, size)
    t_hard, f_hard = _step_time(hard, batch, repeats), _forward_time(hard, batch["image"], repeats)
    n_hard = sum(p.numel() for p in hard.parameters())
    rows = [
        (f"hard-sharing step ({n_hard / 1e6:.2f} M params)", t_hard, "1.00"),
        ("hard-sharing forward (eval)", f_hard, "1.00"),
    ]
    for dim, queries in ((64, 16), (256, 64)):
        mq = mqtransformer_module(tasks, backbone, size, dim, queries)
        n = sum(p.numel() for p in mq.parameters())
        t, f = _step_time(mq, batch, repeats), _forward_time(mq, batch["image"], repeats)
        rows += [
            (
                f"MQTransformer step, dim {dim}, {queries} queries ({n / 1e6:.2f} M params)",
                t,
                f"{t / t_hard:.2f}",
            ),
            (f"MQTransformer forward (eval), dim {dim}", f, f"{f / f_hard:.2f}"),
        ]
    return rows


if __name__ == "__main__":
    for name, t, ratio in main():
        print(f"{name:60s} {t * 1000:8.1f} ms   {ratio}")
