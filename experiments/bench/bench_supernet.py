"""Supernet performance, as ratios measured in one run:

(a) a training step (fwd+bwd) of the supernet running its largest arch vs the equivalent static timm
    ViT with the same dense heads — throughput ratio (and peak-memory ratio on a GPU);
(b) smallest vs largest arch step time, next to their FLOPs ratio (time should follow FLOPs);
(c) search speed: candidates evaluated per second (and images per second) with inherited weights.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import timm
import torch
import yaml

from mtnas.nn.elastic import ElasticDenseHead
from mtnas.search.evaluator import SubnetEvaluator
from mtnas.space import ViTSpace, build_space
from mtnas.supernet import ViTSupernet
from mtnas.supernet.vit import feature_layers
from mtnas.tasks import build_tasks

CONF = Path(__file__).resolve().parents[2] / "conf"
TASKS = {
    "semseg": {"type": "semseg", "num_classes": 13},
    "depth": {"type": "depth"},
    "normal": {"type": "normal"},
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats):
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class StaticTimmMTL(torch.nn.Module):
    """timm ViT (features at the supernet's head layers) + the same dense heads: the 'equivalent static model'."""

    def __init__(self, space, out_channels, img_size, patch):
        super().__init__()
        d, depth = max(space.embed_dims), max(space.depths)
        self.vit = timm.create_model(
            "vit_small_patch16_224",
            pretrained=False,
            img_size=img_size,
            patch_size=patch,
            embed_dim=d,
            depth=depth,
            num_heads=max(space.num_heads),
            mlp_ratio=max(space.mlp_ratios),
            num_classes=0,
        )
        self.layers = feature_layers(depth)
        self.heads = torch.nn.ModuleDict(
            {t: ElasticDenseHead(d, 3, max(space.head_hidden), c) for t, c in out_channels.items()}
        )

    def forward(self, x):
        feats = self.vit.forward_intermediates(
            x, indices=self.layers, norm=True, output_fmt="NCHW", intermediates_only=True
        )
        return {t: h(feats, x.shape[-2:]) for t, h in self.heads.items()}


def main(
    device: str | None = None,
    img=(96, 128),
    patch=16,
    batch=8,
    repeats=5,
    val_images=64,
    compile: bool | None = None,
    dtype: torch.dtype | None = None,
    space: str | None = None,
):
    """`compile` (default: on GPU only, where inductor's kernels pay off) adds the compiled rows (e).
    `space` names a `conf/space/*.yaml` (e.g. autoformer_s, whose largest arch is ViT-S-sized); default:
    a CPU-sized space whose largest arch is a ViT 192 wide and 12 deep."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    compile = dev.type == "cuda" if compile is None else compile
    autocast = torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)
    if space is None:
        space = ViTSpace(
            tasks=tuple(TASKS),
            embed_dims=(144, 168, 192),
            depths=(10, 11, 12),
            num_heads=(2, 3),
            mlp_ratios=(3.5, 4.0),
            head_hidden=(32, 64),
        )
    else:
        cfg = yaml.safe_load((CONF / "space" / f"{space}.yaml").read_text())
        space = build_space({k: v for k, v in cfg.items() if k != "defaults"}, tuple(TASKS))
    tasks = build_tasks(list(TASKS), TASKS)
    out = {t: task.out_channels for t, task in tasks.items()}
    sup = ViTSupernet(space, out, img, patch).to(dev)
    static = StaticTimmMTL(space, out, img, patch).to(dev)
    x = torch.randn(batch, 3, *img, device=dev)
    largest, smallest = space.largest(), space.smallest()

    def step(model, *args):
        def run():
            with autocast:
                preds = model(x, *args)
            sum(p.float().mean() for p in preds.values()).backward()

        return run

    rows = []

    def peak(fn):
        if dev.type != "cuda":
            return None
        torch.cuda.reset_peak_memory_stats()
        fn()
        return torch.cuda.max_memory_allocated()

    t_static = _time(step(static), dev, repeats)
    t_large = _time(step(sup, largest), dev, repeats)
    m_static, m_large = peak(step(static)), peak(step(sup, largest))
    rows.append(
        (
            "(a) supernet step, largest arch",
            t_large,
            f"{t_static / t_large:.2f}× throughput of static timm ViT",
        )
    )
    if m_static:
        rows.append(
            (
                "(a) peak memory, largest arch",
                m_large / 2**20,
                f"{m_large / m_static:.2f}× of static timm ViT",
            )
        )
    t_small = _time(step(sup, smallest), dev, repeats)
    f_l, f_s = sup.cost(largest)["flops"], sup.cost(smallest)["flops"]
    rows.append(
        ("(b) smallest-arch step", t_small, f"{t_small / t_large:.2f}× of largest (FLOPs: {f_s / f_l:.2f}×)")
    )

    # (d) heads + per-pixel losses at full resolution vs at 1/4 (`loss.stride=4`), real task losses.
    from mtnas.lit.multitask import loss_targets, weighted_loss

    gb = torch.Generator().manual_seed(1)
    train_batch = {
        "image": x,
        "semseg": torch.randint(0, 13, (batch, *img), generator=gb).to(dev),
        "depth": (torch.rand(batch, 1, *img, generator=gb) + 0.5).to(dev),
        "normal": torch.nn.functional.normalize(torch.randn(batch, 3, *img, generator=gb), dim=1).to(dev),
    }
    ones = dict.fromkeys(tasks, 1.0)

    def loss_step(stride):
        def run():
            size, targets = loss_targets(tasks, train_batch, stride)
            weighted_loss(tasks, ones, sup(x, largest, size), targets)[0].backward()

        return run

    t_full, t_quarter = _time(loss_step(1), dev, repeats), _time(loss_step(4), dev, repeats)
    rows.append(
        (
            "(d) largest-arch step, real losses at 1/4 res",
            t_quarter,
            f"{t_quarter / t_full:.2f}× of full-res losses ({t_full * 1000:.0f} ms)",
        )
    )

    if compile:
        rows += _compiled_rows(sup, static, space, step, dev, repeats, t_large)

    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "image": torch.randn(16, 3, *img, generator=g),
            "semseg": torch.randint(0, 13, (16, *img), generator=g),
            "depth": torch.rand(16, 1, *img, generator=g) + 0.5,
            "normal": torch.nn.functional.normalize(torch.randn(16, 3, *img, generator=g), dim=1),
        }
        for _ in range(val_images // 16)
    ]
    base = {
        "semseg": {"miou": 0.3, "pixel_acc": 0.6},
        "depth": {"abs_err": 0.6, "rel_err": 0.2},
        "normal": {
            "mean": 25.0,
            "median": 20.0,
            "within_11_25": 30.0,
            "within_22_5": 50.0,
            "within_30": 60.0,
        },
    }
    evaluator = SubnetEvaluator(sup, tasks, batches, base)
    import random

    archs = [space.sample(random.Random(i)) for i in range(4)]
    t = time.perf_counter()
    evaluator(archs)
    _sync(dev)
    per = (time.perf_counter() - t) / len(archs)
    rows.append(
        (
            f"(c) search: one candidate on {val_images} val images",
            per,
            f"{1 / per:.2f} candidates/s, {val_images / per:.0f} images/s",
        )
    )
    precision = str(dtype).removeprefix("torch.") if dtype else "fp32"
    return rows, (
        f"{dev.type}, {img[0]}×{img[1]}, patch {patch}, batch {batch}, {precision}, "
        f"largest = ViT {largest.embed_dim}×{largest.depth}"
    )


def _compiled_rows(sup, static, space, step, dev, repeats, t_large_eager):
    """(e) compiled: static timm ViT compiled once vs the supernet's shape-keyed compiled blocks, on the
    largest arch and on a stream of random archs (one new arch per step, as in supernet training)."""
    import random

    rows = []
    t0 = time.perf_counter()
    static_c = torch.compile(static)
    t_static_c = _time(step(static_c), dev, repeats)
    sup.compile_blocks()
    largest = space.largest()
    t_large_c = _time(step(sup, largest), dev, repeats)
    rows.append(
        (
            "(e) compiled supernet step, largest arch",
            t_large_c,
            f"{t_static_c / t_large_c:.2f}× throughput of compiled static timm ViT "
            f"({t_large_eager / t_large_c:.2f}× of eager supernet)",
        )
    )
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(16)]
    for a in archs:  # warm every variant these archs need (a space has a few dozen block shapes)
        step(sup, a)()
    compile_s = time.perf_counter() - t0
    _sync(dev)
    t = time.perf_counter()
    for a in archs:
        step(sup, a)()
    _sync(dev)
    t_rand_c = (time.perf_counter() - t) / len(archs)
    for m in sup.modules():
        if hasattr(m, "compiled"):
            m.compiled = False
    t = time.perf_counter()
    for a in archs:
        step(sup, a)()
    _sync(dev)
    t_rand_e = (time.perf_counter() - t) / len(archs)
    rows.append(
        (
            "(e) random-arch steps, compiled variants",
            t_rand_c,
            f"{t_rand_e / t_rand_c:.2f}× throughput of eager (compile time {compile_s:.0f} s in all)",
        )
    )
    return rows


if __name__ == "__main__":
    rows, setting = main()
    print(setting)
    for name, t, ratio in rows:
        print(f"{name:44s} {t * 1000 if t < 100 else t:10.1f}   {ratio}")
