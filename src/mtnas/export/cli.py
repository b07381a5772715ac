"""`mtnas-export CKPT [ARCH_YAML] OUT`: write a plain, static multi-task model.

- `SUPERNET_CKPT ARCH_YAML OUT`: the subnet `ARCH_YAML` extracted from a supernet, with inherited weights;
- `MODEL_CKPT OUT`: a trained model as it is (e.g. a run's `retrain/best.ckpt`, the retrained chosen subnet).

OUT holds the whole `nn.Module` (`torch.load(OUT, weights_only=False)` with mtnas installed); with
`--torchscript` it is a traced TorchScript module that loads with `torch.jit.load` and no mtnas at all.
ViT models take inputs of the training image size only (their position embedding is fixed).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def export(ckpt: Path, arch_yaml: Path | None, out: Path, torchscript: bool = False) -> Path:
    import torch

    from mtnas.errors import MtnasError
    from mtnas.lit.checkpoint import load_checkpoint
    from mtnas.space import ViTArch

    if arch_yaml is None:
        try:
            module = load_checkpoint(ckpt, ("model",))
        except MtnasError as err:
            if "is a supernet checkpoint" not in str(err):
                raise
            raise MtnasError(
                f"{err} A supernet holds many subnets: name one, e.g. the run's arch.yaml: "
                f"mtnas-export {ckpt} ARCH_YAML {out}"
            ) from None
        static = module.model.eval()
    else:
        module = load_checkpoint(ckpt, ("supernet",))
        try:
            arch = ViTArch.read(arch_yaml)
        except MtnasError as err:
            raise MtnasError(str(err).removeprefix("Config error at `arch`: ")) from None
        why = module.space.why_outside(arch)
        if why:
            raise MtnasError(f"{arch_yaml} describes an arch outside the supernet's search space: {why}.")
        static = module.net.extract(arch).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if torchscript:
        example = torch.zeros(1, 3, *module.hparams.image_size)
        torch.jit.trace(static, example, strict=False).save(str(tmp))
    else:
        torch.save(static, tmp)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mtnas-export",
        description="write a static multi-task model: a subnet extracted from a supernet "
        "(SUPERNET_CKPT ARCH_YAML OUT), or a trained model as it is (MODEL_CKPT OUT)",
        usage="mtnas-export [-h] [--torchscript] CKPT [ARCH_YAML] OUT",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="CKPT [ARCH_YAML] OUT",
        help="supernet/last.ckpt + arch.yaml + output file, or e.g. retrain/best.ckpt + output file",
    )
    parser.add_argument("--torchscript", action="store_true", help="write a traced TorchScript module")
    args = parser.parse_args(argv)
    if len(args.paths) not in (2, 3):
        parser.error(f"expected CKPT [ARCH_YAML] OUT, got {len(args.paths)} paths")
    paths = [Path(p) for p in args.paths]
    ckpt, arch, out = (paths[0], None, paths[1]) if len(paths) == 2 else paths
    from mtnas.errors import MtnasError

    try:
        print(export(ckpt, arch, out, args.torchscript))
    except MtnasError as err:
        print(f"mtnas-export: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
