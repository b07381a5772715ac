"""`mtnas-data`: dataset tools.

mtnas-data check <dataset> /path/to/root [--tasks a,b] [data.KEY=VALUE ...]
                                                           read every file of every split with the same
                                                           checks training uses; summary; exit 1 on problems.
                                                           The overrides are the training command's own
                                                           (e.g. data.image_size=[256,512])
mtnas-data generate /path/to/out [--height H --width W --train N --val N --test N --seed S]
mtnas-data prepare nyuv2 --mat nyu_depth_v2_labeled.mat --splits splits.mat --map40 classMapping40.mat
                         --out /path/to/nyuv2 [--labels40 F | --map13 F | --raw-depth | --size H W ...]
                                                           the official labeled .mat → the .npy layout

`<dataset>` is the name of a data config (`conf/data/<dataset>.yaml`), so `check` validates exactly
what `mtnas data=<dataset>` will read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def data_configs() -> list[str]:
    from mtnas.cli import config_dir

    return sorted(p.stem for p in (Path(config_dir()) / "data").glob("*.yaml"))


def load_data_config(name: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """`conf/data/<name>.yaml` with `data.KEY=VALUE` overrides (as typed after `mtnas`; `+`/`++` allowed)."""
    from omegaconf import OmegaConf

    from mtnas.cli import config_dir
    from mtnas.errors import ConfigError

    cfg = OmegaConf.load(Path(config_dir()) / "data" / f"{name}.yaml")
    dotlist = []
    for item in overrides or []:
        key, sep, _ = item.lstrip("+").partition("=")
        if not sep or not key.startswith("data."):
            raise ConfigError(
                "data",
                f"override {item!r} is not of the form data.KEY=VALUE (e.g. data.image_size=[256,512]).",
            )
        dotlist.append(item.lstrip("+")[len("data.") :])
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
    except Exception as e:  # a malformed value: say which override, not OmegaConf's internals
        raise ConfigError("data", f"cannot apply overrides {overrides}: {e}") from None
    return OmegaConf.to_container(cfg, resolve=True)


def check(
    name: str,
    root: Path,
    tasks: list[str] | None = None,
    max_problems: int = 20,
    overrides: list[str] | None = None,
) -> int:
    """Index and read every sample of every split; print the first problems (file names) and a summary."""
    import numpy as np
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from mtnas.data.formats import build_dataset, split_name
    from mtnas.errors import DataError, MtnasError

    console = Console()
    try:
        cfg = load_data_config(name, overrides)
    except MtnasError as e:
        console.print(f"[red]✗ {e}[/]")
        return 2
    available = cfg["available_tasks"]
    if tasks is None:
        tasks = [t for t, spec in available.items() if not spec.get("optional")]
    unknown = [t for t in tasks if t not in available]
    if unknown:
        console.print(f"[red]✗ unknown task(s) {unknown}; {name} provides {sorted(available)}[/]")
        return 2
    if not root.is_dir():
        console.print(f"[red]✗ {root}: dataset root does not exist[/]")
        return 1
    problems: list[str] = []
    summary = Table(title=f"{name} at {root}")
    for col in ("split", "samples", "targets"):
        summary.add_column(col)
    semseg = {t: available[t]["num_classes"] for t in tasks if available[t].get("type", t) == "semseg"}
    hists = {t: np.zeros(n + 1, dtype=np.int64) for t, n in semseg.items()}  # last bin: ignore (−1)
    detection = {t: available[t]["num_classes"] for t in tasks if available[t].get("type", t) == "detection"}
    box_counts = {t: np.zeros(n, dtype=np.int64) for t, n in detection.items()}
    splits = dict.fromkeys(split_name(cfg, role) for role in ("train", "val", "test"))
    for split in splits:
        try:
            ds = build_dataset(cfg, root, split, tasks, strict=False)
        except MtnasError as e:
            problems.append(str(e))
            summary.add_row(split, "—", "unreadable")
            continue
        problems += ds.index_problems + ds.check_split()
        for i in track(range(len(ds)), description=f"checking {split}", console=console, transient=True):
            try:
                arrays = ds.load_arrays(i)
            except DataError as e:
                problems.append(str(e))
                continue
            for t, hist in hists.items():
                labels = np.asarray(arrays[t]).astype(np.int64).ravel()
                hist += np.bincount(np.where(labels < 0, len(hist) - 1, labels), minlength=len(hist))
            for t, counts in box_counts.items():
                counts += np.bincount(arrays[t][:, 4].astype(np.int64), minlength=len(counts))
        summary.add_row(split, str(len(ds)), ", ".join(tasks))
    console.print(summary)
    for t, hist in hists.items():
        total = hist.sum()
        if total:
            shares = " ".join(f"{c}:{100 * n / total:.1f}%" for c, n in enumerate(hist[:-1]))
            console.print(f"{t} class histogram (pixels): {shares} ignore:{100 * hist[-1] / total:.1f}%")
    for t, counts in box_counts.items():
        per_class = " ".join(f"{c}:{n}" for c, n in enumerate(counts))
        console.print(f"{t} boxes per class: {per_class} (total {counts.sum()})")
    problems = list(dict.fromkeys(problems))  # split-level problems (e.g. a missing split file) once
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
    p_check.add_argument("dataset", choices=data_configs(), help="a data config name (conf/data/)")
    p_check.add_argument("root", type=Path)
    p_check.add_argument("--tasks", help="comma-separated tasks to check (default: every non-optional one)")
    p_check.add_argument(
        "overrides",
        nargs="*",
        metavar="data.KEY=VALUE",
        help="as in training, e.g. data.image_size=[256,512]",
    )
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
    p_prep = sub.add_parser("prepare", help="convert an official download into a layout mtnas reads")
    prep_sub = p_prep.add_subparsers(dest="dataset", required=True)
    p_nyu = prep_sub.add_parser(
        "nyuv2", help="nyu_depth_v2_labeled.mat + splits.mat → root/{train,val}/{image,label,depth,normal}"
    )
    p_nyu.add_argument("--mat", type=Path, required=True, help="nyu_depth_v2_labeled.mat (MATLAB v7.3)")
    p_nyu.add_argument("--splits", type=Path, required=True, help="splits.mat (trainNdxs, testNdxs)")
    p_nyu.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    p_nyu.add_argument("--map40", type=Path, help="classMapping40.mat (`mapClass`: 894 → 40 classes)")
    p_nyu.add_argument("--labels40", type=Path, help="labels40.mat (per-pixel 40 classes)")
    p_nyu.add_argument("--map13", type=Path, help="class13Mapping.mat (default: the built-in 40 → 13 map)")
    p_nyu.add_argument("--size", type=int, nargs=2, default=[288, 384], metavar=("H", "W"))
    p_nyu.add_argument("--raw-depth", action="store_true", help="rawDepths (0 = missing) instead of depths")
    p_nyu.add_argument("--normal-window", type=int, default=7, help="plane-fit window for normals (odd)")
    p_nyu.add_argument("--limit", type=int, help="only the first N images of each split (a quick look)")
    p_nyu.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    if args.command == "check":
        tasks = args.tasks.split(",") if args.tasks else None
        sys.exit(check(args.dataset, args.root.expanduser(), tasks, overrides=args.overrides))
    if args.command == "prepare" and args.dataset == "nyuv2":
        from mtnas.data.prepare_nyuv2 import main as prepare_nyuv2
        from mtnas.errors import MtnasError

        try:
            sys.exit(prepare_nyuv2(args))
        except MtnasError as e:
            print(f"✗ {e}", file=sys.stderr)
            sys.exit(1)
    from mtnas.data.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(args.height, args.width, args.train, args.val, args.test, args.seed)
    print(generate(spec, args.out))


if __name__ == "__main__":
    main()
