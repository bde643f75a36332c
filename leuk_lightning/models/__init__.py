"""Models: timm backbones with local pretrained weights, classifier heads, two-head networks."""

from leuk_lightning.models.detection import Detector, create_detector
from leuk_lightning.models.factory import create_backbone, create_classifier, load_backbone_weights
from leuk_lightning.models.multitask import MultiTaskNet, create_multitask_net

__all__ = [
    "Detector",
    "MultiTaskNet",
    "create_backbone",
    "create_classifier",
    "create_detector",
    "create_multitask_net",
    "load_backbone_weights",
]
