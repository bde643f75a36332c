"""LightningModules, one per training regime."""

from leuk_lightning.regimes.classifier import ClassifierModule

__all__ = ["ClassifierModule"]
