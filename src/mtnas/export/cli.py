"""`mtnas-export CKPT [ARCH_YAML] OUT`: write a plain, static multi-task model, whatever method made it.

- `SUPERNET_CKPT ARCH_YAML OUT`: the subnet `ARCH_YAML` extracted from a supernet (a ViT supernet's
  `supernet/last.ckpt`, an automtl run's `policy/last.ckpt`, or a two_stage run's `backbone/last.ckpt`), with
  inherited weights;
- `MODEL_CKPT OUT`: a trained model as it is (e.g. a run's `retrain/best.ckpt` or `train/best.ckpt`); the
  checkpoint holds its model spec, so no method or config is needed to rebuild it.

OUT holds the whole `nn.Module` (`torch.load(OUT, weights_only=False)` with mtnas installed); with
`--torchscript` a traced TorchScript module (`torch.jit.load`, no mtnas); with `--onnx` an ONNX graph
(input `image`, one output per task, named after it; any batch size), checked against the PyTorch model with
onnxruntime before it is kept. ViT models take inputs of the training image size only (their position
embedding is fixed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

FORMATS = ("module", "torchscript", "onnx")
ONNX_TOLERANCE = 1e-4  # max |onnxruntime − PyTorch| accepted, relative to the output's magnitude (+ this abs)


def load_static_model(ckpt: Path, arch_yaml: Path | None, out: Path):
    """The static model in `ckpt` (a trained model), or `arch_yaml` extracted from the supernet in `ckpt`;
    and the image size it was trained at."""
    from mtnas.errors import MtnasError
    from mtnas.lit.checkpoint import load_checkpoint

    if arch_yaml is None:
        try:
            module = load_checkpoint(ckpt, ("model",))
        except MtnasError as err:
            if "supernet checkpoint" not in str(err):
                raise
            raise MtnasError(
                f"{err} A supernet holds many subnets: name one, e.g. the run's arch.yaml: "
                f"mtnas-export {ckpt} ARCH_YAML {out}"
            ) from None
        return module.model.eval(), tuple(module.hparams.image_size)
    module = load_checkpoint(ckpt, ("supernet", "policy", "cells"))
    if getattr(module.hparams, "cell_search", None) == "presearch":
        raise MtnasError(
            f"{ckpt} is a two_stage run's backbone pre-search (a classification net): export a subnet from the "
            "run's backbone/last.ckpt instead."
        )
    space = (
        module.space if hasattr(module, "space") else module.net.space
    )  # ViT supernet | policy/cell supernet
    try:
        arch = space.read_arch(arch_yaml)
    except MtnasError as err:
        message = str(err).removeprefix("Config error at `arch`: ")
        raise MtnasError(
            message.replace("this run's search space (`space`)", "the supernet's search space")
        ) from None
    return module.net.extract(arch).eval(), tuple(module.hparams.image_size)


def export(ckpt: Path, arch_yaml: Path | None, out: Path, *, fmt: str = "module") -> Path:
    import torch

    from mtnas.errors import MtnasError

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:  # the output folder is checked first: loading and tracing take a while
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.touch()
    except OSError as err:
        why = err.strerror or str(err)
        if isinstance(err, FileExistsError | NotADirectoryError):
            why = f"a part of {out.parent} is a file, not a folder"
        raise MtnasError(f"cannot write {out}: {why}.") from None
    try:
        static, image_size = load_static_model(ckpt, arch_yaml, out)
        example = torch.rand(2, 3, *image_size)  # batch 2: a batch of 1 would be traced as a constant
        if fmt == "onnx":
            export_onnx(static, example, tmp)
        else:
            traced = torch.jit.trace(static, example, strict=False) if fmt == "torchscript" else None
            try:  # torch.save / jit.save report a full disk or a vanished folder as RuntimeError
                if traced is not None:
                    traced.save(str(tmp))
                else:
                    torch.save(static, tmp)
            except (OSError, RuntimeError) as err:
                raise MtnasError(f"cannot write {out}: {str(err).splitlines()[0]}") from None
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _tuple_outputs(model, tasks: list[str]):
    """`model` with its dict output as a tuple in task order (ONNX graphs have positional outputs)."""
    import torch

    class TupleOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, image):
            out = self.model(image)
            return tuple(out[t] for t in tasks)

    return TupleOutputs().eval()


@contextlib.contextmanager
def _as_export_error(step: str):
    """A model the exporter cannot handle gets one paragraph naming the step and its error, not a traceback."""
    from mtnas.errors import MtnasError

    try:
        yield
    except MtnasError:
        raise
    except Exception as err:  # noqa: BLE001 - any exporter failure: the user gets its first line
        raise MtnasError(
            f"the ONNX export failed in {step}: {type(err).__name__}: {str(err).strip().splitlines()[0][:300]} "
            "(export without --onnx, or with --torchscript, still works)."
        ) from None


def export_onnx(model, example, path: Path) -> None:
    """`torch.onnx.export` (the dynamo exporter: it reproduces every model kind exactly), batch size dynamic;
    then the file is run with onnxruntime on a fresh batch and compared with the PyTorch model."""
    import io

    import onnxruntime as ort
    import torch

    from mtnas.errors import MtnasError

    with torch.no_grad():
        tasks = list(model(example))
    wrapped = _tuple_outputs(model, tasks)
    with (
        contextlib.redirect_stdout(io.StringIO()),
        _as_export_error("torch.onnx.export"),
    ):  # it prints its passes
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=["image"],
            output_names=tasks,
            dynamo=True,
            dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
            external_data=False,  # one self-contained file (weights inside; fine below ONNX's 2 GB limit)
        )
    check = torch.rand(3, *example.shape[1:])  # another batch size than the traced one
    with _as_export_error("onnxruntime"):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": check.numpy()})
    with torch.no_grad():
        ref = model(check)
    for task, value in zip(tasks, got, strict=True):
        diff = (torch.from_numpy(value) - ref[task]).abs().max().item()
        if diff > ONNX_TOLERANCE * (1 + ref[task].abs().max().item()):
            raise MtnasError(
                f"the ONNX graph's `{task}` output differs from the PyTorch model's by {diff:.3g}; not written."
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mtnas-export",
        description="write a static multi-task model: a subnet extracted from a supernet "
        "(SUPERNET_CKPT ARCH_YAML OUT), or a trained model as it is (MODEL_CKPT OUT)",
        usage="mtnas-export [-h] [--torchscript | --onnx] CKPT [ARCH_YAML] OUT",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="CKPT [ARCH_YAML] OUT",
        help="supernet/last.ckpt + arch.yaml + output file, or e.g. retrain/best.ckpt + output file",
    )
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--torchscript", action="store_true", help="write a traced TorchScript module")
    kind.add_argument(
        "--onnx", action="store_true", help="write an ONNX graph (checked with onnxruntime against PyTorch)"
    )
    args = parser.parse_args(argv)
    if len(args.paths) not in (2, 3):
        parser.error(f"expected CKPT [ARCH_YAML] OUT, got {len(args.paths)} paths")
    paths = [Path(p) for p in args.paths]
    ckpt, arch, out = (paths[0], None, paths[1]) if len(paths) == 2 else paths
    fmt = "torchscript" if args.torchscript else "onnx" if args.onnx else "module"
    from mtnas.errors import MtnasError

    try:
        print(export(ckpt, arch, out, fmt=fmt))
    except MtnasError as err:
        print(f"mtnas-export: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
