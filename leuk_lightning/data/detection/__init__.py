"""Cell-detection data: Pascal VOC I/O (``voc``), the C-NMC -> VOC converter (``convert``), the
VOC dataset (``dataset``) and the detection datamodule (``datamodule``)."""

from leuk_lightning.data.detection.datamodule import DetectionDataModule
from leuk_lightning.data.detection.dataset import CELLS_VOC_CLASSES, CellsVocDataset

__all__ = ["CELLS_VOC_CLASSES", "CellsVocDataset", "DetectionDataModule"]
