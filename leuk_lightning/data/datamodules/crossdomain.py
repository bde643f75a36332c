"""Source + target batches together, for DL4ALL's multi-task cross-dataset training.

``CrossDomainDataModule`` holds two :class:`ClassificationDataModule` (one per domain: ADP as the
source, the C-NMC training folds as the target), so each domain gets what the single-dataset
module already does: its own seeded split (70/20/10 in DL4ALL, Sec. IV-B), normalisation from its
own training subset, its own batch size and on-device augmentation (random rotations,
horizontal and vertical flips). Both splits are saved in the run directory
(``split_source.json``, ``split_target.json``).

Training batches are ``{"source": batch, "target": batch}`` from a Lightning ``CombinedLoader``.
How long an epoch is (``epoch_length``):

* ``target`` (default, DL4ALL): until the target loader is exhausted; the source loader cycles
  (restarts with a new shuffle) when it is shorter, and is cut when it is longer (the next epoch
  draws a new shuffle, so every source patch is still seen in expectation).
* ``source``: the same with the roles swapped.
* ``max_size_cycle``: until the longer loader is exhausted, the shorter one cycling.
* ``min_size``: until the shorter loader is exhausted.

Validation and test run on the target domain only (the source domain only helps training).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning import LightningDataModule
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from leuk_lightning.data import splits as S
from leuk_lightning.data.datamodules.classification import ClassificationDataModule
from leuk_lightning.errors import ConfigError
from leuk_lightning.utils.config import plain

log = logging.getLogger(__name__)

EPOCH_LENGTHS = ("target", "source", "max_size_cycle", "min_size")
DOMAINS = ("source", "target")


class CrossDomainDataModule(LightningDataModule):
    """Two datasets, each split and normalised on its own, batched together for training.

    Args:
        source_dataset: partial of the source dataset (ADP; ``label="tissue"`` multi-label at
            ``label_level``, or ``label="slide"`` for the self-supervised procedure).
        target_dataset: partial of the target dataset (C-NMC training folds).
        label_level: ADP label level of the source labels (recorded for sweeps and reports).
        image_size: side of the (square) images of both domains after loading.
        source_batch_size, target_batch_size: training batch sizes |B_source|, |B_target|.
        eval_batch_size: batch size of target validation/test.
        source_split, target_split: ``fractions``/``seed``/``group_by`` of each domain.
        source_split_file, target_split_file: saved splits to reuse exactly.
        normalization: ``train`` (each domain's own training-subset statistics) or ``imagenet``.
        augment: ``BatchAugment`` settings, applied (independently) to both domains' batches.
        epoch_length: ``target`` | ``source`` | ``max_size_cycle`` | ``min_size`` (see above).
        output_dir: run directory where both splits are written.
        pin_memory, persistent_workers, cache, cache_dir: as in ``ClassificationDataModule``
            (each domain's images are decoded once into the memory-mapped cache).
    """

    def __init__(
        self,
        source_dataset: Callable[..., Dataset],
        target_dataset: Callable[..., Dataset],
        label_level: int | None = None,
        image_size: int | None = 224,
        source_batch_size: int = 8,
        target_batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        source_split: dict[str, Any] | None = None,
        target_split: dict[str, Any] | None = None,
        source_split_file: str | None = None,
        target_split_file: str | None = None,
        normalization: str = "train",
        augment: dict[str, Any] | None = None,
        epoch_length: str = "target",
        output_dir: str | None = None,
        stats_cache_dir: str | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        # datamodules.py re-exports this class, so its names are imported here, not at the top

        super().__init__()
        if epoch_length not in EPOCH_LENGTHS:
            raise ConfigError(
                f"data.epoch_length={epoch_length!r} is not known; use one of {EPOCH_LENGTHS}"
            )
        self.label_level = label_level
        self.epoch_length = epoch_length
        self.output_dir = output_dir
        common = dict(
            label_level=label_level,
            image_size=image_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            normalization=normalization,
            augment=plain(augment),
            output_dir=None,  # this module writes both splits under their own names
            stats_cache_dir=stats_cache_dir,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            cache=cache,
            cache_dir=cache_dir,
        )
        self.domains: dict[str, ClassificationDataModule] = {
            "source": ClassificationDataModule(
                source_dataset,
                batch_size=source_batch_size,
                split=plain(source_split),
                split_file=source_split_file,
                **common,
            ),
            "target": ClassificationDataModule(
                target_dataset,
                batch_size=target_batch_size,
                split=plain(target_split),
                split_file=target_split_file,
                **common,
            ),
        }
        self._ready = False

    @property
    def source(self) -> ClassificationDataModule:
        return self.domains["source"]

    @property
    def target(self) -> ClassificationDataModule:
        return self.domains["target"]

    # --------------------------------------------------------------- set-up
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        for name, dm in self.domains.items():
            dm.setup(stage)
            if self.output_dir:
                S.save_split(
                    Path(self.output_dir) / f"split_{name}.json",
                    dm.split_indices,
                    dm.dataset.paths,
                    meta={
                        "domain": name,
                        "split": dm.split_cfg,
                        "dataset": type(dm.dataset).__name__,
                        "split_file": dm.split_file,
                    },
                )
        if self.target.multilabel or self.target.num_classes < 2:
            raise ConfigError(
                "data.target_dataset must be a single-label classification dataset (C-NMC); "
                f"got {type(self.target.dataset).__name__} with {self.target.num_classes} classes"
            )
        self._ready = True

    def model_kwargs(self) -> dict[str, Any]:
        """Output sizes of the two heads."""
        self.setup()
        return {
            "num_source_classes": self.source.num_classes,
            "num_target_classes": self.target.num_classes,
        }

    def regime_kwargs(self) -> dict[str, Any]:
        """Task description of both domains; ``num_classes``/``class_*`` are the target's."""
        self.setup()
        return {
            "num_classes": self.target.num_classes,
            "class_weights": self.target.class_weights,
            "class_names": list(self.target.dataset.classes),
            "num_source_classes": self.source.num_classes,
            "source_multilabel": self.source.multilabel,
            "source_class_weights": self.source.class_weights,
            "source_class_names": list(self.source.dataset.classes),
        }

    # --------------------------------------------------------------- loaders
    def _mode(self, lengths: dict[str, int]) -> str:
        if self.epoch_length in ("max_size_cycle", "min_size"):
            return self.epoch_length
        other = "source" if self.epoch_length == "target" else "target"
        # the driving loader sets the length: cycle the other if shorter, cut it if longer
        return "max_size_cycle" if lengths[other] <= lengths[self.epoch_length] else "min_size"

    def train_dataloader(self) -> CombinedLoader:
        loaders = {name: dm.train_dataloader() for name, dm in self.domains.items()}
        lengths = {name: len(loader) for name, loader in loaders.items()}
        if not all(lengths.values()):
            raise ConfigError(f"an empty training loader: batches per domain {lengths}")
        return CombinedLoader(loaders, mode=self._mode(lengths))

    def val_dataloader(self) -> DataLoader:
        return self.target.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.target.test_dataloader()

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Each domain's batch gets its own augmentation and normalisation, on its device."""
        training = self.trainer is not None and self.trainer.training
        if "source" in batch and "target" in batch:
            for name in DOMAINS:
                batch[name] = self._transform(name, batch[name], training)
            return batch
        return self._transform("target", batch, training)

    def _transform(self, domain: str, batch: dict[str, Any], training: bool) -> dict[str, Any]:
        transform = self.domains[domain].batch_transform
        if transform is not None and "image" in batch:
            batch["image"] = transform.to(batch["image"].device)(batch["image"], train=training)
        return batch
