"""Building blocks with no search logic: backbones, dense heads, static multi-task networks."""

from mtnas.nn.backbone import TimmBackbone
from mtnas.nn.heads import MultiScaleHead
from mtnas.nn.multitask import MultiTaskNet, build_multitask_net

__all__ = ["MultiScaleHead", "MultiTaskNet", "TimmBackbone", "build_multitask_net"]
