"""Source + target batches together, for DL4ALL's multi-task cross-dataset training.

``CrossDomainDataModule`` holds two :class:`ClassificationDataModule` (one per domain: ADP as the
source, the C-NMC training folds as the target), so each domain gets what the single-dataset
module already does: its own seeded split (70/20/10 in DL4ALL, Sec. IV-B), normalisation from its
own training subset, its own batch size and on-device augmentation (random rotations,
horizontal and vertical flips). Both splits are saved in the run directory
(``split_source.json``, ``split_target.json``).

Recipe settings (``conf/data/adp_cnmc.yaml`` picks the code's or the text's value):

* ``source_batch_size: auto``: |Bs| = ceil(|Bt| * |source train| / |target train|) (floor when
  the target is the larger), the code's ``util/computeBatchSize.py`` (16 for ADP 80 % vs C-NMC
  70 % with |Bt| = 8, 14 for the self-supervised 70 % ADP split); ``batch_sizes`` holds both.
* ``source_augment`` / ``target_augment``: each domain's own augmentation (code: ADP flips only,
  C-NMC flips and ``RandomRotation(90)``); ``augment`` is the fallback for both.
* ``normalization_stats``: ``channels: per_channel | scalar`` (the code: one mean/std for all
  channels) and ``subsets`` (the code: train + val; the text: train).
* ``class_weights``: ``subsets`` the counts come from and ``floor`` (the code:
  w_i = (N_train + N_val) / max(n_i, 10), ``util/computeClassWeights.py``).
* ``split``: the evaluation protocol's keys (``conf/protocol/``): ``protocol``, ``n_repeats``,
  ``repeat`` (and ``fold``/``n_splits``) apply to both domains, so each repetition redraws both
  splits; ``fractions`` applies to the target (C-NMC) only, the source keeps its recipe's.

``bn_batches(n, device)`` yields ``n`` augmented, normalised target training batches: the
regime's batch-norm re-estimation before validation (the code's ``pretrainBN``).

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
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from leuk_lightning.data import splits as S
from leuk_lightning.data import stats
from leuk_lightning.data.datamodules.classification import (
    ClassificationDataModule,
    build_batch_transform,
)
from leuk_lightning.errors import ConfigError
from leuk_lightning.utils.config import plain

log = logging.getLogger(__name__)

EPOCH_LENGTHS = ("target", "source", "max_size_cycle", "min_size")
DOMAINS = ("source", "target")
SUBSETS = ("train", "val", "test")
# protocol keys that apply to both domains; `fractions` applies to the target only
SHARED_PROTOCOL_KEYS = ("protocol", "n_repeats", "repeat", "fold", "n_splits")


def rule_batch_size(target_batch: int, n_source_train: int, n_target_train: int) -> int:
    """|Bs| from |Bt| and the training-set sizes (the code's ``computeBatchSize``)."""
    if n_source_train > n_target_train:
        return max(1, math.ceil(target_batch * n_source_train / n_target_train))
    if n_source_train < n_target_train:
        return max(1, math.floor(target_batch * n_source_train / n_target_train))
    return target_batch


def scalar_mean_std(mean: list[float], std: list[float]) -> tuple[float, float]:
    """One mean/std over all channels (equal pixel counts) from per-channel statistics."""
    m = float(np.mean(mean))
    second = float(np.mean([s * s + mu * mu for mu, s in zip(mean, std, strict=True)]))
    return m, math.sqrt(max(second - m * m, 0.0))


def floored_class_weights(labels: torch.Tensor, num_classes: int, floor: int) -> torch.Tensor:
    """w_i = N / max(n_i, floor) (floor 0: N / n_i and 0 for classes without samples)."""
    if labels.ndim == 2:
        counts = labels.float().sum(0)
    else:
        counts = torch.bincount(labels.long(), minlength=num_classes).float()
    n = float(labels.shape[0])
    if floor > 0:
        return n / counts.clamp(min=float(floor))
    return torch.where(counts > 0, n / counts.clamp(min=1), torch.zeros_like(counts))


class CrossDomainDataModule(LightningDataModule):
    """Two datasets, each split and normalised on its own, batched together for training.

    Args:
        source_dataset: partial of the source dataset (ADP; ``label="tissue"`` multi-label at
            ``label_level``, or ``label="slide"`` for the self-supervised procedure).
        target_dataset: partial of the target dataset (C-NMC training folds).
        label_level: ADP label level of the source labels (recorded for sweeps and reports).
        image_size: side of the (square) images of both domains after loading.
        source_batch_size, target_batch_size: training batch sizes |B_source|, |B_target|;
            ``source_batch_size: auto`` follows the code's rule (module doc).
        eval_batch_size: batch size of target validation/test.
        source_split, target_split: ``fractions``/``seed``/``group_by`` of each domain.
        source_split_file, target_split_file: saved splits to reuse exactly.
        normalization: ``train`` (each domain's own training-subset statistics) or ``imagenet``.
        augment: ``BatchAugment`` settings, applied (independently) to both domains' batches.
        source_augment, target_augment: per-domain settings (override ``augment``).
        normalization_stats: ``channels`` (per_channel | scalar), ``subsets`` (train[, val]).
        class_weights: ``subsets`` (train[, val]) and ``floor`` of the class counts.
        split: evaluation-protocol keys (module doc); ``None``: each domain's own split.
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
        source_batch_size: int | str = 8,
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
        source_augment: dict[str, Any] | None = None,
        target_augment: dict[str, Any] | None = None,
        normalization_stats: dict[str, Any] | None = None,
        class_weights: dict[str, Any] | None = None,
        split: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if epoch_length not in EPOCH_LENGTHS:
            raise ConfigError(
                f"data.epoch_length={epoch_length!r} is not known; use one of {EPOCH_LENGTHS}"
            )
        self.label_level = label_level
        self.epoch_length = epoch_length
        self.output_dir = output_dir
        self.stats_cache_dir = stats_cache_dir
        self.auto_source_batch = source_batch_size == "auto"
        if not self.auto_source_batch and not (
            isinstance(source_batch_size, int) and source_batch_size > 0
        ):
            raise ConfigError(
                f"data.source_batch_size={source_batch_size!r} must be a positive int or 'auto'"
            )
        if not isinstance(target_batch_size, int) or target_batch_size <= 0:
            raise ConfigError(f"data.target_batch_size={target_batch_size!r} must be an int > 0")
        self.norm_stats = self._check_norm_stats(plain(normalization_stats) or {})
        if self.norm_stats != {"channels": "per_channel", "subsets": ["train"]} and (
            normalization != "train"
        ):
            raise ConfigError(
                "data.normalization_stats needs data.normalization=train (statistics of the data)"
            )
        self.class_weight_cfg = self._check_class_weights(plain(class_weights) or {})
        source_split, target_split = self._protocol_splits(
            plain(source_split), plain(target_split), plain(split)
        )
        augment = plain(augment)
        per_domain = {
            "source": plain(source_augment) if source_augment is not None else augment,
            "target": plain(target_augment) if target_augment is not None else augment,
        }
        common = dict(
            label_level=label_level,
            image_size=image_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            normalization=normalization,
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
                batch_size=target_batch_size if self.auto_source_batch else source_batch_size,
                split=source_split,
                split_file=source_split_file,
                augment=per_domain["source"],
                **common,
            ),
            "target": ClassificationDataModule(
                target_dataset,
                batch_size=target_batch_size,
                split=target_split,
                split_file=target_split_file,
                augment=per_domain["target"],
                **common,
            ),
        }
        self._ready = False

    # ------------------------------------------------------------ settings
    @staticmethod
    def _check_norm_stats(cfg: dict[str, Any]) -> dict[str, Any]:
        channels = cfg.get("channels", "per_channel")
        subsets = list(cfg.get("subsets", ["train"]))
        if channels not in ("per_channel", "scalar"):
            raise ConfigError(
                f"data.normalization_stats.channels={channels!r} is not known; "
                "use per_channel or scalar"
            )
        if not subsets or "train" not in subsets or any(s not in SUBSETS for s in subsets):
            raise ConfigError(
                f"data.normalization_stats.subsets={subsets} must contain 'train' and only "
                f"names of {SUBSETS}"
            )
        return {"channels": channels, "subsets": subsets}

    @staticmethod
    def _check_class_weights(cfg: dict[str, Any]) -> dict[str, Any]:
        subsets = list(cfg.get("subsets", ["train"]))
        floor = cfg.get("floor", 0)
        if not subsets or "train" not in subsets or any(s not in SUBSETS for s in subsets):
            raise ConfigError(
                f"data.class_weights.subsets={subsets} must contain 'train' and only names of "
                f"{SUBSETS}"
            )
        if not isinstance(floor, int) or floor < 0:
            raise ConfigError(f"data.class_weights.floor={floor!r} must be an int >= 0")
        return {"subsets": subsets, "floor": floor}

    @staticmethod
    def _protocol_splits(
        source: dict[str, Any] | None, target: dict[str, Any] | None, split: dict[str, Any] | None
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Each domain's split with the evaluation protocol's keys applied (module doc)."""
        if not split:
            return source, target
        unknown = set(split) - {*SHARED_PROTOCOL_KEYS, "fractions", "seed", "group_by"}
        if unknown:
            raise ConfigError(
                f"data.split has keys {sorted(unknown)} that a cross-domain datamodule does not "
                "know; protocols set protocol/n_repeats/repeat/fold/n_splits/fractions"
            )
        shared = {k: split[k] for k in SHARED_PROTOCOL_KEYS if k in split}
        target_only = {k: split[k] for k in ("fractions", "seed", "group_by") if k in split}
        src = {**(source or {}), **shared}
        tgt = {**(target or {}), **shared, **target_only}
        return src, tgt

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
            with torch.random.fork_rng(devices=[]):  # statistics loaders draw no run seeds
                self._recipe_statistics(dm)
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
        if self.auto_source_batch:
            self.source.batch_size = rule_batch_size(
                self.target.batch_size,
                len(self.source.split_indices["train"]),
                len(self.target.split_indices["train"]),
            )
        self.batch_sizes = {"source": self.source.batch_size, "target": self.target.batch_size}
        log.info("Training batch sizes: |Bs| = %(source)d, |Bt| = %(target)d", self.batch_sizes)
        self._ready = True

    def _subset_indices(self, dm: ClassificationDataModule, subsets: list[str]) -> np.ndarray:
        parts = [np.asarray(dm.split_indices[s]) for s in subsets]
        return np.unique(np.concatenate(parts)).astype(np.int64)

    def _recipe_statistics(self, dm: ClassificationDataModule) -> None:
        """Normalisation statistics and class weights as the recipe asks (module doc)."""
        cfg = self.norm_stats
        if cfg != {"channels": "per_channel", "subsets": ["train"]}:
            idx = self._subset_indices(dm, cfg["subsets"])
            if self.stats_cache_dir:
                mean, std = stats.cached_mean_std(dm.dataset, idx, self.stats_cache_dir)
            else:
                mean, std = stats.channel_mean_std(dm.dataset, idx)
            if cfg["channels"] == "scalar":
                m, sd = scalar_mean_std(mean, std)
                mean, std = [m] * 3, [sd] * 3
            dm.mean, dm.std = mean, std
            dm.batch_transform = build_batch_transform(mean, std, dm.augment_cfg)
        cw = self.class_weight_cfg
        if cw != {"subsets": ["train"], "floor": 0}:
            idx = torch.as_tensor(self._subset_indices(dm, cw["subsets"]))
            dm.class_weights = floored_class_weights(
                dm.dataset.labels[idx], dm.num_classes, cw["floor"]
            )

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

    def bn_batches(self, n: int, device: torch.device) -> Any:
        """``n`` augmented, normalised target training batches (BN re-estimation)."""
        self.setup()
        transform = self.target.batch_transform
        assert transform is not None
        transform = transform.to(device)
        for i, batch in enumerate(self.target.train_dataloader()):
            if i >= n:
                break
            yield transform(batch["image"].to(device), train=True)

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
