"""The hand-made multi-task model: one `model` spec (e.g. hard sharing on a timm backbone), no search; and
optionally a `reference` model spec trained by the same recipe and reported beside it (e.g. MQTransformer
beside hard sharing on the same backbone)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtnas.errors import ConfigError
from mtnas.methods.base import Method
from mtnas.run import Unit
from mtnas.utils.specs import check_spec

if TYPE_CHECKING:
    from mtnas.run import Run


class StaticMethod(Method):
    stages = ("train",)
    final_folder = "train"
    reference_folder = "reference"

    def __init__(
        self,
        name: str,
        model: Mapping[str, Any],
        space: Mapping[str, Any] | None = None,
        supernet_ckpt: str | None = None,
        arch: str | None = None,
        reference: Mapping[str, Any] | None = None,
        reference_name: str = "reference",
    ):
        """`reference`: a second model spec, trained on the same tasks by the same recipe (stage `reference`,
        folder `reference/`) and reported beside `model`. The single-task baselines then train the reference
        architecture, so that both models are measured against the same Δm baselines."""
        super().__init__(name)
        nas = "is for a NAS method (e.g. method=autotaskformer, which any ViT `space=` selects)"
        for key, value, what in (
            ("space", space, f"a search space {nas}; drop `method={name}` to search it"),
            ("supernet_ckpt", supernet_ckpt, f"a supernet {nas}"),
            ("arch", arch, f"an arch to retrain {nas}, with the space it came from"),
        ):
            if value is not None:
                raise ConfigError(
                    key, f"method={name} trains the model in `model` and searches nothing: {what}."
                )
        # The specs' settings are checked now (their backbones are built only when training starts).
        self.model = _checked_spec(model, "model")
        self.reference = _checked_spec(reference, "method.reference") if reference is not None else None
        self.reference_name = str(reference_name)
        if self.reference is not None:
            self.stages = ("train", "reference")

    def check(self, run: Run, plan: tuple[str, ...]) -> None:
        """Build the model once on the meta device (no memory, no weights read): a setting it cannot take
        (e.g. `model.head.hidden=0`) is refused now, not when its first unit starts training."""
        if not {"baselines", "train"} & set(plan):
            return
        import torch

        from mtnas.lit.multitask import build_model

        specs = {"model": self.model, "method.reference": self.reference}
        for key, model in specs.items():
            if model is None:
                continue
            spec = {**model, "backbone": {**model.get("backbone", {}), "checkpoint": None}}
            try:
                with torch.device("meta"):
                    build_model(spec, run.task_objs, run.image_size)
            except (TypeError, ValueError, RuntimeError, AssertionError) as err:
                raise ConfigError(
                    key,
                    f"{model['_target_']} cannot be built with these settings: {str(err).splitlines()[0]}",
                ) from None

    def run_stage(self, stage: str, run: Run) -> None:
        if stage == "reference":
            unit = Unit(self.reference_name, run.out / self.reference_folder, tuple(run.tasks))
            run.fit(unit, run.lit_module(unit, self.reference))
            return
        unit = run.multitask_unit(self.final_folder)
        run.fit(unit, run.lit_module(unit, self.model))

    def baseline_model(self, run: Run) -> dict[str, Any]:
        return self.reference if self.reference is not None else self.model

    def trained_dirs(self, run: Run) -> list[Path]:
        return [run.out / self.final_folder, *self.reference_folders(run).values()]

    def reference_folders(self, run: Run) -> dict[str, Path]:
        if self.reference is None:
            return {}
        return {self.reference_name: run.out / self.reference_folder}


def _checked_spec(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    _, spec = check_spec(spec, key, runtime=("tasks", "image_size"))
    backbone = (spec.get("backbone") or {}).get("name")
    if backbone is not None:
        import timm

        if backbone not in timm.list_models():
            raise ConfigError(
                f"{key}.backbone.name", f"{backbone!r} is not a timm model name (see `timm.list_models()`)."
            )
    return spec
