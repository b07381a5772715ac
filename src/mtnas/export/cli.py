"""`mtnas-export SUPERNET_CKPT ARCH_YAML OUT`: write the extracted static subnet.

OUT holds the whole `nn.Module` (`torch.load(OUT, weights_only=False)` with mtnas installed); with
`--torchscript` it is a traced TorchScript module that loads with `torch.jit.load` and no mtnas at all.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def export(supernet_ckpt: Path, arch_yaml: Path, out: Path, torchscript: bool = False) -> Path:
    import torch
    import yaml

    from mtnas.errors import MtnasError
    from mtnas.lit.supernet import SupernetLitModule
    from mtnas.space import ViTArch

    for path, what in ((supernet_ckpt, "supernet checkpoint"), (arch_yaml, "arch file")):
        if not path.is_file():
            raise MtnasError(f"{what} {path} does not exist.")
    module = SupernetLitModule.load_from_checkpoint(supernet_ckpt, map_location="cpu")
    arch = ViTArch.from_dict(yaml.safe_load(arch_yaml.read_text()))
    if not module.space.contains(arch):
        raise MtnasError(f"{arch_yaml} describes an arch outside the supernet's search space.")
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
        prog="mtnas-export", description="extract a searched subnet as a static module"
    )
    parser.add_argument("supernet_ckpt", type=Path, help="supernet/last.ckpt of a run")
    parser.add_argument("arch", type=Path, help="arch.yaml (the search's choice, or any arch of the space)")
    parser.add_argument("out", type=Path, help="output file, e.g. subnet.pt")
    parser.add_argument("--torchscript", action="store_true", help="write a traced TorchScript module")
    args = parser.parse_args(argv)
    from mtnas.errors import MtnasError

    try:
        print(export(args.supernet_ckpt, args.arch, args.out, args.torchscript))
    except MtnasError as err:
        print(f"mtnas-export: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
