"""The hand-made multi-task model: one `model` spec (e.g. hard sharing on a timm backbone), no search."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mtnas.errors import ConfigError
from mtnas.methods.base import Method
from mtnas.utils.specs import check_spec

if TYPE_CHECKING:
    from mtnas.run import Run


class StaticMethod(Method):
    stages = ("train",)
    final_folder = "train"

    def __init__(
        self,
        name: str,
        model: Mapping[str, Any],
        space: Mapping[str, Any] | None = None,
        supernet_ckpt: str | None = None,
        arch: str | None = None,
    ):
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
        # The spec's settings are checked now (its backbone is built only when training starts).
        check_spec(model, "model", runtime=("tasks", "image_size"))
        self.model = dict(model)
        backbone = (self.model.get("backbone") or {}).get("name")
        if backbone is not None:
            import timm

            if backbone not in timm.list_models():
                raise ConfigError(
                    "model.backbone.name",
                    f"{backbone!r} is not a timm model name (see `timm.list_models()`).",
                )

    def check(self, run: Run, plan: tuple[str, ...]) -> None:
        """Build the model once on the meta device (no memory, no weights read): a setting it cannot take
        (e.g. `model.head.hidden=0`) is refused now, not when its first unit starts training."""
        if not {"baselines", "train"} & set(plan):
            return
        import torch

        from mtnas.lit.multitask import build_model

        spec = {**self.model, "backbone": {**self.model.get("backbone", {}), "checkpoint": None}}
        try:
            with torch.device("meta"):
                build_model(spec, run.task_objs, run.image_size)
        except (TypeError, ValueError, RuntimeError, AssertionError) as err:
            raise ConfigError(
                "model",
                f"{self.model['_target_']} cannot be built with these settings: {str(err).splitlines()[0]}",
            ) from None

    def run_stage(self, stage: str, run: Run) -> None:
        unit = run.multitask_unit(self.final_folder)
        run.fit(unit, run.lit_module(unit, self.model))

    def baseline_model(self, run: Run) -> dict[str, Any]:
        return self.model
