"""LightningModules: static multi-task training (baselines and hard-sharing models)."""

from mtnas.lit.multitask import MultiTaskLitModule

__all__ = ["MultiTaskLitModule"]
