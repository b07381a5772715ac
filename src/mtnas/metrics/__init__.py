"""Dense-prediction (image-level and detection) metrics as torchmetrics `Metric`s (sum states, so they sync under DDP) and Δm."""

from mtnas.metrics.classification import ClassificationMetrics
from mtnas.metrics.delta_m import delta_m
from mtnas.metrics.depth import DepthMetrics
from mtnas.metrics.detection import DetectionMetrics
from mtnas.metrics.edge import BoundaryFScore
from mtnas.metrics.normal import NormalMetrics
from mtnas.metrics.regression import RegressionMetrics
from mtnas.metrics.saliency import SaliencyMetrics
from mtnas.metrics.semseg import SemsegMetrics

__all__ = [
    "BoundaryFScore",
    "ClassificationMetrics",
    "DepthMetrics",
    "DetectionMetrics",
    "NormalMetrics",
    "RegressionMetrics",
    "SaliencyMetrics",
    "SemsegMetrics",
    "delta_m",
]
