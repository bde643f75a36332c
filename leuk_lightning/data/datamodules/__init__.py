"""Lightning datamodules: splits, loaders and batch transforms (no model code here).

``classification``: one dataset (:class:`ClassificationDataModule`); ``crossdomain``: source and
target batches together for DL4ALL (:class:`CrossDomainDataModule`).
"""

from leuk_lightning.data.datamodules.classification import ClassificationDataModule
from leuk_lightning.data.datamodules.crossdomain import CrossDomainDataModule

__all__ = ["ClassificationDataModule", "CrossDomainDataModule"]
