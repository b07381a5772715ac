"""`mtnas-data`: dataset tools.

mtnas-data check nyuv2 /path/to/nyuv2       validate every file; summary; exit 1 on problems
mtnas-data generate /path/to/out [--height H --width W --train N --val N --test N --seed S]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Per dataset: the task folders and kinds of the .npy layout, and the expected size / classes.
LAYOUTS = {
    "nyuv2": {
        "folders": {"label": "semseg", "depth": "depth", "normal": "normal"},
        "optional": {"edge": "edge"},
        "size": (288, 384),
        "num_classes": 13,
        "splits": ("train", "val"),
    },
    "synthetic": {
        "folders": {"label": "semseg", "depth": "depth", "normal": "normal", "edge": "edge"},
        "optional": {},
        "size": None,
        "num_classes": 7,
        "splits": ("train", "val", "test"),
    },
}


def check(name: str, root: Path, max_problems: int = 20) -> int:
    """Read every file of the layout; print the first problems (file names) and a summary."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from mtnas.data.npy_folder import check_array, check_values, list_indices
    from mtnas.errors import DataError

    console = Console()
    layout = LAYOUTS[name]
    problems: list[str] = []
    summary = Table(title=f"{name} at {root}")
    for col in ("split", "samples", "folders"):
        summary.add_column(col)
    hist = np.zeros(layout["num_classes"] + 1, dtype=np.int64)  # last bin: ignore (−1)
    if not root.is_dir():
        console.print(f"[red]✗ {root}: dataset root does not exist[/]")
        return 1
    for split in layout["splits"]:
        split_dir = root / split
        folders = {"image": "image", **layout["folders"]}
        folders.update({f: k for f, k in layout["optional"].items() if (split_dir / f).is_dir()})
        try:
            indices = list_indices(split_dir / "image")
        except DataError as e:
            problems.append(str(e))
            continue
        for folder in folders:
            if folder == "image":
                continue
            try:
                if len(list_indices(split_dir / folder)) != len(indices):
                    problems.append(f"{split_dir / folder}: file count differs from image/ ({len(indices)})")
            except DataError as e:
                problems.append(str(e))
        for i in indices:
            for folder, kind in folders.items():
                path = split_dir / folder / f"{i}.npy"
                if not path.exists():
                    continue  # counted above
                try:
                    arr = np.load(path, allow_pickle=False)
                except Exception as e:  # noqa: BLE001 - any unreadable file is a reported problem
                    problems.append(f"{path}: not a readable .npy array ({e})")
                    continue
                found = check_array(path, arr, kind, layout["size"])
                found = found or check_values(path, arr, kind, layout["num_classes"])
                problems += found
                if kind == "semseg" and not found:
                    labels = arr.astype(np.int64).ravel()
                    hist += np.bincount(
                        np.where(labels < 0, layout["num_classes"], labels), minlength=len(hist)
                    )
        summary.add_row(split, str(len(indices)), ", ".join(folders))
    console.print(summary)
    total = hist.sum()
    if total:
        shares = " ".join(f"{c}:{100 * n / total:.1f}%" for c, n in enumerate(hist[:-1]))
        console.print(f"class histogram (pixels): {shares} ignore:{100 * hist[-1] / total:.1f}%")
    if problems:
        console.print(f"[red]✗ {len(problems)} problem(s); the first {min(len(problems), max_problems)}:[/]")
        for p in problems[:max_problems]:
            print(f"  {p}")  # plain print: file paths must never be wrapped or styled
        return 1
    console.print("[green]✓ layout, shapes, dtypes and value ranges are as expected[/]")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mtnas-data", description="mtnas dataset tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="validate a dataset folder")
    p_check.add_argument("dataset", choices=sorted(LAYOUTS))
    p_check.add_argument("root", type=Path)
    p_gen = sub.add_parser("generate", help="write the synthetic dataset (NYUv2 layout) to a folder")
    p_gen.add_argument("out", type=Path)
    for flag, default in (
        ("height", 96),
        ("width", 128),
        ("train", 512),
        ("val", 128),
        ("test", 128),
        ("seed", 0),
    ):
        p_gen.add_argument(f"--{flag}", type=int, default=default)
    args = parser.parse_args(argv)
    if args.command == "check":
        sys.exit(check(args.dataset, args.root.expanduser()))
    from mtnas.data.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(args.height, args.width, args.train, args.val, args.test, args.seed)
    print(generate(spec, args.out))


if __name__ == "__main__":
    main()
