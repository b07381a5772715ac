"""`make bench`: every benchmark, printed as one table of ratios (absolute times are for context only)."""

from __future__ import annotations

import platform
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_cells  # noqa: E402
import bench_cli  # noqa: E402
import bench_mqtransformer  # noqa: E402
import bench_policy  # noqa: E402
import bench_supernet  # noqa: E402
import bench_train_step  # noqa: E402


def main() -> None:
    import torch

    device = (
        "cuda: " + torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(
        f"# mtnas benchmarks — {date.today()} — {platform.machine()} {device} — torch {torch.__version__}\n"
    )
    for title, module in (
        ("CLI start-up", bench_cli),
        ("training step (CPU, 96×128, batch 16)", bench_train_step),
        ("AutoMTL policy supernet (mobilenetv3_small_100, 96×128, batch 16, 3 tasks)", bench_policy),
        (
            "MQTransformer vs hard sharing (mobilenetv3_small_100, 96×128, batch 16, 3 tasks)",
            bench_mqtransformer,
        ),
        ("MTNAS cell supernet (channels 16, 5 cells, 64×64, batch 16, semseg + detection)", bench_cells),
    ):
        print(f"## {title}\n")
        print("| measurement | median time | ratio |\n|---|---|---|")
        for name, t, ratio in module.main():
            print(f"| {name} | {t * 1000:.0f} ms | {ratio} |")
        print()
    if torch.cuda.is_available():  # the GPU setting: ViT-S scale, NYUv2 size, bf16, compiled rows
        rows, setting = bench_supernet.main(
            img=(288, 384),
            batch=64,
            val_images=654,
            dtype=torch.bfloat16,
            compile=True,
            space="autoformer_s",
        )
    else:
        rows, setting = bench_supernet.main()
    print(f"## supernet ({setting})\n")
    print("| measurement | median | ratio |\n|---|---|---|")
    for name, value, ratio in rows:
        unit = "MiB" if "memory" in name else "ms"
        print(f"| {name} | {value if unit == 'MiB' else value * 1000:.0f} {unit} | {ratio} |")
    print()


if __name__ == "__main__":
    main()
