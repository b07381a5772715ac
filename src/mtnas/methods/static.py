"""The hand-made multi-task model: one `model` spec (e.g. hard sharing on a timm backbone), no search."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mtnas.errors import ConfigError
from mtnas.methods.base import Method

if TYPE_CHECKING:
    from mtnas.run import Run


class StaticMethod(Method):
    stages = ("train",)
    final_folder = "train"

    def __init__(self, name: str, model: Mapping[str, Any], arch: str | None = None):
        super().__init__(name)
        if arch is not None:
            raise ConfigError(
                "arch",
                f"method={name} trains the model in `model` and has no arch to retrain; a searched arch.yaml "
                "is retrained by its NAS method (e.g. method=autotaskformer with the space it came from).",
            )
        self.model = dict(model)
        backbone = (self.model.get("backbone") or {}).get("name")
        if backbone is not None:
            import timm

            if backbone not in timm.list_models():
                raise ConfigError(
                    "model.backbone.name",
                    f"{backbone!r} is not a timm model name (see `timm.list_models()`).",
                )

    def run_stage(self, stage: str, run: Run) -> None:
        unit = run.multitask_unit(self.final_folder)
        run.fit(unit, run.lit_module(unit, self.model))

    def baseline_model(self, run: Run) -> dict[str, Any]:
        return self.model
