"""Models: timm backbones with local pretrained weights, classifier heads, two-head networks."""

from leuk_lightning.models.detection import Detector, create_detector
from leuk_lightning.models.factory import create_backbone, create_classifier, load_backbone_weights

__all__ = [
    "Detector",
    "create_backbone",
    "create_classifier",
    "create_detector",
    "load_backbone_weights",
]
