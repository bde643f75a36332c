"""LightningDataModules: splits, loaders and on-device batch transforms; no model knowledge.

``ClassificationDataModule`` wraps one dataset (ALL-IDB2, ADP, C-NMC): it draws (or reloads) a
seeded, stratified split, saves it as ``split.json`` in the run directory, computes normalisation
statistics on the training subset only, and exposes what the model and regime need to be built
(``model_kwargs``/``regime_kwargs``: number of classes, multi-label flag, class weights).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset, Subset

from leuk_lightning.data import splits as S
from leuk_lightning.data import stats
from leuk_lightning.data.transforms import BatchAugment, BatchTransform, Normalize
from leuk_lightning.errors import ConfigError

log = logging.getLogger(__name__)


def plain(value: Any) -> Any:
    """Config nodes (DictConfig/ListConfig) as plain Python containers; other values unchanged."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def class_weights_from_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """w[i] = N / n_i over the given (training) labels; 0 for classes without samples.

    Multi-label labels are a multi-hot matrix (n_i = positives of class i); single-label labels a
    vector of class indices (n_i = samples of class i).
    """
    if labels.ndim == 2:
        counts = labels.float().sum(0)
    else:
        counts = torch.bincount(labels.long(), minlength=num_classes).float()
    n = float(labels.shape[0])
    return torch.where(counts > 0, n / counts.clamp(min=1), torch.zeros_like(counts))


def build_batch_transform(
    mean: Sequence[float], std: Sequence[float], augment: dict[str, Any] | None
) -> BatchTransform:
    """Batch pipeline from the ``augment`` config (keys of ``BatchAugment``)."""
    augment = dict(augment or {})
    eval_crop = augment.get("center_crop")
    return BatchTransform(
        Normalize(mean, std), BatchAugment(**augment) if augment else None, eval_crop
    )


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool | None = None,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader with sensible defaults (persistent workers, pinned memory on GPU)."""
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=pin,
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
        generator=generator,
    )


class ClassificationDataModule(LightningDataModule):
    """One classification dataset split into train/val/test subsets.

    Args:
        dataset: a partial of a dataset class (``_partial_: true`` in config), called with
            ``image_size`` to build the full dataset.
        label_level: ADP label level of this data (ADP) or of the pre-training stage it follows
            (ALL-IDB2 in HistoTNet); recorded for sweeps and reports.
        split: ``fractions`` (train/val[/test]), ``seed``, ``group_by`` (``subject`` keeps each
            subject in one subset; needs a dataset with ``subjects``).
        split_file: a ``split.json`` of an earlier run to reuse exactly.
        normalization: ``train`` (statistics of the training subset) or ``imagenet``.
        augment: ``BatchAugment`` settings applied to training batches on the device.
        output_dir: where ``split.json`` is written (the run directory).
        stats_cache_dir: where per-split mean/std are cached.
    """

    def __init__(
        self,
        dataset: Callable[..., Dataset],
        label_level: int | None = None,
        image_size: int | None = 224,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        split: dict[str, Any] | None = None,
        split_file: str | None = None,
        normalization: str = "train",
        augment: dict[str, Any] | None = None,
        output_dir: str | None = None,
        stats_cache_dir: str | None = None,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        if normalization not in {"train", "imagenet"}:
            raise ConfigError(
                f"data.normalization={normalization!r} is not known; use 'train' or 'imagenet'"
            )
        self.dataset_factory = dataset
        self.label_level = label_level
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.split_cfg = plain(split) or {"fractions": [0.7, 0.2, 0.1], "seed": 0}
        self.split_file = split_file
        self.normalization = normalization
        self.augment_cfg = plain(augment) or {}
        self.output_dir = output_dir
        self.stats_cache_dir = stats_cache_dir
        self.pin_memory = pin_memory
        self.dataset: Any = None
        self.subsets: dict[str, Subset] = {}
        self.batch_transform: BatchTransform | None = None

    # --------------------------------------------------------------- set-up
    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset = self.dataset_factory(image_size=self.image_size)
        indices = self._split_indices()
        self.subsets = {name: Subset(self.dataset, idx.tolist()) for name, idx in indices.items()}
        self.split_indices = indices
        mean, std = self._normalization_stats(indices["train"])
        self.mean, self.std = mean, std
        self.batch_transform = build_batch_transform(mean, std, self.augment_cfg)
        self._warn_empty_classes(indices["train"])

    def _split_indices(self) -> dict[str, Any]:
        labels = self.dataset.labels
        groups = None
        group_by = self.split_cfg.get("group_by")
        if group_by:
            if not hasattr(self.dataset, f"{group_by}s"):
                raise ConfigError(
                    f"data.split.group_by={group_by!r}: dataset {type(self.dataset).__name__} "
                    f"has no '{group_by}s' to group by"
                )
            groups = getattr(self.dataset, f"{group_by}s")
        if self.split_file:
            indices = S.load_split(self.split_file, self.dataset.paths)
            log.info("Reusing split %s", self.split_file)
        else:
            fractions = list(self.split_cfg.get("fractions", [0.7, 0.2, 0.1]))
            names = ("train", "val", "test")[: len(fractions)]
            indices = S.holdout_split(
                labels,
                fractions,
                seed=int(self.split_cfg.get("seed", 0)),
                groups=groups,
                names=names,
            )
        if "test" not in indices:  # e.g. ADP pre-training 90/10: validation doubles as test
            indices["test"] = indices["val"]
        if self.output_dir:
            S.save_split(
                Path(self.output_dir) / "split.json",
                {k: v for k, v in indices.items()},
                self.dataset.paths,
                meta={
                    "split": self.split_cfg,
                    "dataset": type(self.dataset).__name__,
                    "split_file": self.split_file,
                },
            )
        return indices

    def _normalization_stats(self, train_idx: Any) -> tuple[list[float], list[float]]:
        if self.normalization == "imagenet":
            return list(stats.IMAGENET_MEAN), list(stats.IMAGENET_STD)
        if self.stats_cache_dir:
            return stats.cached_mean_std(self.dataset, train_idx, self.stats_cache_dir)
        return stats.channel_mean_std(self.dataset, train_idx)

    def _warn_empty_classes(self, train_idx: Any) -> None:
        labels = self.dataset.labels[torch.as_tensor(train_idx, dtype=torch.long)]
        weights = class_weights_from_labels(labels, self.num_classes)
        empty = [c for c, w in zip(self.dataset.classes, weights.tolist()) if w == 0]
        if empty:
            log.warning(
                "Classes without samples in the training split (excluded from per-class "
                "metrics, loss weight 0): %s",
                ", ".join(empty),
            )
        self.class_weights = weights

    # ------------------------------------------------------- what others need
    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    @property
    def multilabel(self) -> bool:
        return self.dataset.labels.ndim == 2

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the network factory (output size)."""
        self.setup()
        return {"num_classes": self.num_classes}

    def regime_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the LightningModule (task description)."""
        self.setup()
        return {
            "num_classes": self.num_classes,
            "multilabel": self.multilabel,
            "class_weights": self.class_weights,
            "class_names": list(self.dataset.classes),
        }

    # --------------------------------------------------------------- loaders
    def train_dataloader(self) -> DataLoader:
        return make_loader(
            self.subsets["train"],
            self.batch_size,
            True,
            self.num_workers,
            self.pin_memory,
            drop_last=len(self.subsets["train"]) > self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return make_loader(
            self.subsets["val"], self.eval_batch_size, False, self.num_workers, self.pin_memory
        )

    def test_dataloader(self) -> DataLoader:
        return make_loader(
            self.subsets["test"], self.eval_batch_size, False, self.num_workers, self.pin_memory
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Augment (training only) and normalise the uint8 batch on its device."""
        if self.batch_transform is not None and "image" in batch:
            training = self.trainer is not None and self.trainer.training
            batch["image"] = self.batch_transform.to(batch["image"].device)(
                batch["image"], train=training
            )
        return batch
