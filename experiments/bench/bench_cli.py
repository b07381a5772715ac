"""`mtnas --help` start-up cost, as a ratio to a bare Python start and to `import torch`.

The CLI must not import torch before it needs it; a ratio near 1× `python -c pass` + Hydra's own import
means the lazy imports work.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(repeats: int = 5) -> list[tuple[str, float, str]]:
    py = sys.executable
    mtnas = str(Path(py).parent / "mtnas")
    base = timed([py, "-c", "pass"], repeats)
    torch = timed([py, "-c", "import torch"], repeats)
    hydra = timed([py, "-c", "import hydra, omegaconf"], repeats)
    helpt = timed([mtnas, "--help"], repeats)
    return [
        ("python -c pass", base, "1.00×"),
        ("import hydra, omegaconf", hydra, f"{hydra / base:.2f}×"),
        ("mtnas --help", helpt, f"{helpt / base:.2f}×  ({helpt / torch:.2f}× of `import torch`)"),
        ("import torch", torch, f"{torch / base:.2f}×"),
    ]


if __name__ == "__main__":
    for name, t, ratio in main():
        print(f"{name:28s} {t * 1000:8.0f} ms   {ratio}")
