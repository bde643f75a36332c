"""LightningModules, one per training regime."""

from leuk_lightning.regimes.classifier import ClassifierModule
from leuk_lightning.regimes.detector import DetectorModule

__all__ = ["ClassifierModule", "DetectorModule"]
