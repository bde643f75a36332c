"""LightningModules, one per training regime."""

from leuk_lightning.regimes.classifier import ClassifierModule
from leuk_lightning.regimes.greedy import GreedyMultiSourceModule
from leuk_lightning.regimes.multisource import MultiSourceModule

__all__ = ["ClassifierModule", "GreedyMultiSourceModule", "MultiSourceModule"]
