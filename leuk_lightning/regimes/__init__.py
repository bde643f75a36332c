"""LightningModules, one per training regime."""

from leuk_lightning.regimes.classifier import ClassifierModule
from leuk_lightning.regimes.detector import DetectorModule
from leuk_lightning.regimes.greedy import GreedyMultiSourceModule
from leuk_lightning.regimes.multisource import MultiSourceModule

__all__ = ["ClassifierModule", "DetectorModule", "GreedyMultiSourceModule", "MultiSourceModule"]
