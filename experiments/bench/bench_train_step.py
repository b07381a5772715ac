"""Training step of the hard-sharing multi-task model vs the T single-task models it replaces.

Same backbone, same heads, same batch; one fwd+bwd+optimizer step each. Reported as ratios measured in
one run (machines here are noisy): < 1 means one multi-task step is cheaper than T single-task steps.
"""

from __future__ import annotations

import statistics
import time

import torch

from mtnas.lit.multitask import MultiTaskLitModule

AVAILABLE = {
    "semseg": {"type": "semseg", "num_classes": 7},
    "depth": {"type": "depth"},
    "normal": {"type": "normal"},
}


def synthetic_batch(b: int, size) -> dict:
    """A random batch of images and targets for the three AVAILABLE tasks."""
    return {
        "image": torch.rand(b, 3, *size),
        "semseg": torch.randint(0, 7, (b, *size)),
        "depth": torch.rand(b, 1, *size) + 0.5,
        "normal": torch.nn.functional.normalize(torch.randn(b, 3, *size), dim=1),
    }


def hard_sharing_module(tasks, backbone, size):
    return MultiTaskLitModule(
        tasks,
        AVAILABLE,
        {
            "_target_": "mtnas.nn.multitask.build_multitask_net",
            "backbone": {"name": backbone},
            "head": {"hidden": 32},
        },
        {"lr": 1e-3},
        {"weighting": "fixed"},
        size,
    )


def _step_time(module, batch, repeats):
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        total, _ = module._losses(module(batch["image"]), batch)
        opt.zero_grad()
        total.backward()
        opt.step()
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(backbone: str = "mobilenetv3_small_100", size=(96, 128), batch_size: int = 16, repeats: int = 8):
    torch.manual_seed(0)
    batch = synthetic_batch(batch_size, size)
    tasks = list(AVAILABLE)
    mtl = _step_time(hard_sharing_module(tasks, backbone, size), batch, repeats)
    singles = [_step_time(hard_sharing_module([t], backbone, size), batch, repeats) for t in tasks]
    return [
        (f"multi-task step ({len(tasks)} tasks)", mtl, f"{mtl / sum(singles):.2f}× of the single-task steps"),
        *[
            (f"single-task step: {t}", s, f"{s / mtl:.2f}× of multi-task")
            for t, s in zip(tasks, singles, strict=True)
        ],
    ]


if __name__ == "__main__":
    for name, t, ratio in main():
        print(f"{name:34s} {t * 1000:8.1f} ms   {ratio}")
