"""Detection datamodule: image + boxes samples, list collation, box-safe augmentation.

``DetectionDataModule`` wraps a box dataset (``CellsVocDataset``): it draws (or reloads) a
seeded split stratified by each image's dominant class, saves it as ``split.json`` in the run
directory, and batches samples as lists (images differ in their number of boxes). Training
batches are augmented on their device, image by image, with torchvision.transforms.v2 over
``tv_tensors.BoundingBoxes`` so the boxes follow every flip and affine warp, and boxes pushed
(almost) out of the picture are dropped with their labels (``SanitizeBoundingBoxes``).
Normalisation is not done here: torchvision detectors normalise inside the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule
from sklearn.model_selection import StratifiedShuffleSplit
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import tv_tensors
from torchvision.transforms import v2

from leuk_lightning.data import splits as S
from leuk_lightning.errors import ConfigError, DataError
from leuk_lightning.utils.config import plain

log = logging.getLogger(__name__)
SUBSETS = ("train", "val", "test")


def collate_detection(samples: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Samples -> ``{"image": [uint8 [3,H,W]], "boxes": [[N,4]], "labels": [[N]], "path": [..]}``
    (plain tensors: the tv_tensors wrappers are re-attached where a transform needs them)."""
    batch: dict[str, list[Any]] = {"image": [], "boxes": [], "labels": [], "path": []}
    for s in samples:
        batch["image"].append(s["image"].as_subclass(Tensor))
        batch["boxes"].append(s["boxes"].as_subclass(Tensor).float())
        batch["labels"].append(torch.as_tensor(s["labels"], dtype=torch.int64))
        batch["path"].append(s.get("path", ""))
    return batch


def build_detection_augment(
    hflip: float = 0.5,
    vflip: float = 0.5,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    fill: int = 0,
    min_box_size: float = 2.0,
) -> v2.Compose:
    """Box-safe augmentation of one ``{"image", "boxes", "labels"}`` sample (v2 transforms).

    Flips with the given probabilities; a random affine warp (rotation within
    ``+-degrees``, shift up to ``translate`` of the size, zoom within ``1 +- scale``) when any
    of them is set; then boxes are clamped to the picture and those narrower than
    ``min_box_size`` pixels are removed together with their labels.
    """
    steps: list[Callable[..., Any]] = []
    if hflip:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if vflip:
        steps.append(v2.RandomVerticalFlip(vflip))
    if degrees or translate or scale:
        steps.append(
            v2.RandomAffine(
                degrees=degrees,
                translate=(translate, translate) if translate else None,
                scale=(1 - scale, 1 + scale) if scale else None,
                fill=fill,
            )
        )
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=min_box_size)]
    return v2.Compose(steps)


def augment_batch(batch: dict[str, Any], transform: Callable[..., Any]) -> dict[str, Any]:
    """Apply ``transform`` to every image of a collated batch (on its device), boxes included."""
    images, boxes, labels = [], [], []
    for image, box, label in zip(batch["image"], batch["boxes"], batch["labels"]):
        out = transform(
            {
                "image": tv_tensors.Image(image),
                "boxes": tv_tensors.BoundingBoxes(
                    box, format="XYXY", canvas_size=tuple(image.shape[-2:])
                ),
                "labels": label,
            }
        )
        images.append(out["image"].as_subclass(Tensor))
        boxes.append(out["boxes"].as_subclass(Tensor))
        labels.append(out["labels"])
    return {**batch, "image": images, "boxes": boxes, "labels": labels}


def stratified_counts_split(labels: Any, counts: Sequence[int], seed: int) -> dict[str, np.ndarray]:
    """Exact subset sizes (e.g. 240/60 of the paper), stratified by ``labels``; items beyond
    ``sum(counts)`` are left out (a 300-image selection from a larger converted C-NMC)."""
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
    counts = [int(c) for c in counts]
    if not 2 <= len(counts) <= 3 or any(c < 1 for c in counts):
        raise ConfigError(f"data.split.counts={counts} needs 2 or 3 positive sizes")
    if sum(counts) > len(y):
        raise ConfigError(f"data.split.counts={counts} asks for {sum(counts)} of {len(y)} images")
    idx = np.arange(len(y))
    try:
        if sum(counts) < len(y):
            sss = StratifiedShuffleSplit(1, train_size=sum(counts), random_state=seed)
            idx = next(sss.split(idx, y))[0]
        out: dict[str, np.ndarray] = {}
        rest = idx
        for k, name in enumerate(SUBSETS[: len(counts) - 1]):
            sss = StratifiedShuffleSplit(
                1, train_size=counts[k], test_size=sum(counts[k + 1 :]), random_state=seed + k
            )
            first, second = next(sss.split(rest, y[rest]))
            out[name], rest = rest[first], rest[second]
        out[SUBSETS[len(counts) - 1]] = rest
    except ValueError as err:
        raise DataError(f"cannot draw a stratified split of sizes {counts}: {err}") from err
    return {k: np.sort(v).astype(np.int64) for k, v in out.items()}


class DetectionDataModule(LightningDataModule):
    """One box dataset split into train/val(/test) subsets, batched as lists.

    Args:
        dataset: partial of the dataset class, called with ``image_size``.
        image_size: square size the pictures (and boxes) are resized to on load; None keeps
            them (the model then resizes within its own ``min_size``/``max_size``).
        split: ``fractions`` (e.g. [0.8, 0.2]) or ``counts`` (e.g. [240, 60]; counts win),
            ``seed``; stratified by each image's dominant class. Without a test subset the
            validation subset doubles as the test subset (the paper has no third set).
        split_file: a ``split.json`` of an earlier run to reuse exactly.
        augment: ``build_detection_augment`` settings for training batches; null disables.
        output_dir: where ``split.json`` is written.
        stats_cache_dir: accepted for the common datamodule interface; unused (detectors
            normalise inside the model).
        cache_dir: accepted for the common datamodule interface; unused (box datasets are
            small and their boxes are resized with the pictures on load, so they are not cached).
    """

    def __init__(
        self,
        dataset: Callable[..., Dataset],
        image_size: int | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        split: dict[str, Any] | None = None,
        split_file: str | None = None,
        augment: dict[str, Any] | None = None,
        output_dir: str | None = None,
        stats_cache_dir: str | None = None,
        pin_memory: bool | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.dataset_factory = dataset
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.split_cfg = plain(split) or {"fractions": [0.8, 0.2], "seed": 0}
        self.split_file = split_file
        self.augment_cfg = plain(augment)
        self.output_dir = output_dir
        self.pin_memory = pin_memory
        self.dataset: Any = None
        self.subsets: dict[str, Subset] = {}
        self.augment = build_detection_augment(**self.augment_cfg) if self.augment_cfg else None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset = self.dataset_factory(image_size=self.image_size)
        self.split_indices = self._split_indices()
        self.subsets = {k: Subset(self.dataset, v.tolist()) for k, v in self.split_indices.items()}
        log.info(
            "Detection split: %s",
            ", ".join(f"{k} {len(v)}" for k, v in self.split_indices.items()),
        )

    def _split_indices(self) -> dict[str, np.ndarray]:
        labels = self.dataset.labels
        seed = int(self.split_cfg.get("seed", 0))
        if self.split_file:
            indices = S.load_split(self.split_file, self.dataset.paths)
        elif self.split_cfg.get("counts"):
            indices = stratified_counts_split(labels, self.split_cfg["counts"], seed)
        else:
            fractions = list(self.split_cfg.get("fractions") or [0.8, 0.2])
            indices = S.holdout_split(labels, fractions, seed=seed, names=SUBSETS)
        if "test" not in indices:
            indices["test"] = indices["val"]
        if self.output_dir:
            S.save_split(
                Path(self.output_dir) / "split.json",
                indices,
                self.dataset.paths,
                meta={
                    "split": self.split_cfg,
                    "dataset": type(self.dataset).__name__,
                    "split_file": self.split_file,
                    "stratified_by": "dominant class per image",
                },
            )
        return indices

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    def model_kwargs(self) -> dict[str, Any]:
        """Network factory arguments: classes, the picture size the model is fed, and the
        training boxes' (w, h) in fractions of their picture (YOLOv3 fits its anchors to them;
        the other detectors ignore them)."""
        self.setup()
        return {
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "box_sizes": self.train_box_sizes(),
        }

    def train_box_sizes(self) -> list[list[float]]:
        """(w, h) of every training box as fractions of its picture's width and height."""
        self.setup()
        sizes: list[list[float]] = []
        for i in self.split_indices["train"].tolist():
            boxes = self.dataset.boxes[i]
            if not len(boxes):
                continue
            w, h = self.dataset.image_sizes[i]
            wh = (boxes[:, 2:] - boxes[:, :2]) / torch.tensor([float(w), float(h)])
            sizes.extend(wh.tolist())
        return sizes

    def regime_kwargs(self) -> dict[str, Any]:
        """LightningModule arguments: class names (metrics and predictions name them)."""
        self.setup()
        return {"num_classes": self.num_classes, "class_names": list(self.dataset.classes)}

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        pin = torch.cuda.is_available() if self.pin_memory is None else self.pin_memory
        return DataLoader(
            self.subsets[name],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_detection,
            drop_last=shuffle and len(self.subsets[name]) > batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, False)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Augment training batches image by image on their device (boxes follow)."""
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            batch = augment_batch(batch, self.augment)
        return batch
