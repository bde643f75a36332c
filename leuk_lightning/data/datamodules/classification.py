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

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Subset

from leuk_lightning.data import splits as S
from leuk_lightning.data import stats
from leuk_lightning.data.cache import maybe_cached
from leuk_lightning.data.transforms import BatchAugment, BatchTransform, Normalize
from leuk_lightning.errors import ConfigError
from leuk_lightning.utils.config import plain

log = logging.getLogger(__name__)


def class_weights_from_labels(
    labels: torch.Tensor, num_classes: int, min_count: int | None = None
) -> torch.Tensor:
    """w[i] = N / n_i over the given (training) labels; 0 for classes without samples.

    Multi-label labels are a multi-hot matrix (n_i = positives of class i); single-label labels a
    vector of class indices (n_i = samples of class i). ``min_count``: counts below it are raised
    to it, so every class gets a finite weight N / max(n_i, min_count) (the HistoCNN code's rule
    with 10: ``(1) PyTorch_HistoNet/functions/train_model_val.py:57-67``).
    """
    if labels.ndim == 2:
        counts = labels.float().sum(0)
    else:
        counts = torch.bincount(labels.long(), minlength=num_classes).float()
    n = float(labels.shape[0])
    if min_count is not None:
        return n / counts.clamp(min=float(min_count))
    return torch.where(counts > 0, n / counts.clamp(min=1), torch.zeros_like(counts))


# train: per-channel mean/std of the training subset; imagenet: ImageNet statistics;
# scalar_train_val: ONE mean and std over all channels and pixels of train + validation (the
# HistoCNN code, util/computeMeanStd.py); none: only [0, 255] -> [0, 1] (ToTensor(), as the
# HistoTNet fine-tuning and Prellberg & Kramer code)
NORMALIZATIONS = ("train", "imagenet", "scalar_train_val", "none")


def build_batch_transform(
    mean: Sequence[float], std: Sequence[float], augment: dict[str, Any] | None
) -> BatchTransform:
    """Batch pipeline from the ``augment`` config (keys of ``BatchAugment``)."""
    augment = dict(augment or {})
    eval_crop = augment.get("center_crop")
    eval_crop_fraction = augment.get("center_crop_fraction")
    return BatchTransform(
        Normalize(mean, std),
        BatchAugment(**augment) if augment else None,
        eval_crop,
        eval_crop_fraction,
    )


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool | None = None,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
    persistent_workers: bool | None = None,
) -> DataLoader:
    """A DataLoader with sensible defaults: pinned memory when a GPU is present, persistent
    workers when there are workers (``None`` = these defaults; pass a bool to force)."""
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    persistent = num_workers > 0 if persistent_workers is None else persistent_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=pin,
        persistent_workers=persistent and num_workers > 0,
        drop_last=drop_last,
        generator=generator,
    )


SPLIT_PROTOCOLS = ("holdout", "kfold", "fixed")


def fixed_split(dataset: Any) -> dict[str, Any]:
    """``data.split.protocol=fixed``: the subsets a dataset states per item (``split_names``,
    e.g. the ``split`` column of a CSV manifest); without test items the validation subset
    doubles as the test subset."""
    names = getattr(dataset, "split_names", None)
    if names is None:
        raise ConfigError(
            f"data.split.protocol=fixed: dataset {type(dataset).__name__} states no split per "
            "image (a CSV manifest needs a 'split' column with train/val/test)"
        )
    names = np.asarray(names)
    indices = {k: np.flatnonzero(names == k) for k in ("train", "val", "test")}
    empty = [k for k in ("train", "val") if not len(indices[k])]
    if empty:
        raise ConfigError(f"data.split.protocol=fixed: no images in subset(s) {empty}")
    if not len(indices["test"]):
        del indices["test"]
    return indices


def _split_index(split_cfg: dict[str, Any], key: str, limit: int | None) -> int | None:
    """``data.split.repeat``/``fold`` as an int checked against its range (None when unset)."""
    value = split_cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or value < 0 or (limit is not None and value >= limit):
        bound = f"0..{limit - 1}" if limit is not None else ">= 0"
        raise ConfigError(f"data.split.{key}={value!r} must be an int in {bound}")
    return value


def split_seed_meta(split_cfg: dict[str, Any]) -> dict[str, Any]:
    """What ``split.json`` records about the random stream a split was drawn from."""
    repeat = split_cfg.get("repeat")
    seed = int(split_cfg.get("seed", 0))
    if repeat is None:
        return {"protocol": split_cfg.get("protocol", "holdout"), "rng_entropy": seed}
    return {
        "protocol": split_cfg.get("protocol", "holdout"),
        "rng_entropy": S.repeat_entropy(seed, int(repeat)),
    }


def protocol_split(labels: Any, split_cfg: dict[str, Any], groups: Any = None) -> dict[str, Any]:
    """Indices of this run's subsets under ``data.split`` (an evaluation protocol).

    * ``protocol: holdout`` (default): ``fractions`` train/val[/test]; with ``repeat: r`` the
      split of repetition r is drawn from ``default_rng([seed, r])`` (DL4ALL 70/20/10 x5).
    * ``protocol: kfold``: stratified ``n_splits``-fold CV repeated ``n_repeats`` times; this
      run is ``fold`` of ``repeat``. ``fractions`` = [train, val, test] with test = 1/n_splits;
      the training pool (the other folds) is split train:val (HistoTNet 40/10/50, 2-fold x10).
    ``group_by`` groups (subjects) never straddle two subsets in either protocol.
    ``protocol: fixed`` (the dataset's own per-image split) is handled by the datamodule.
    """
    protocol = split_cfg.get("protocol") or "holdout"
    if protocol not in SPLIT_PROTOCOLS:
        raise ConfigError(f"data.split.protocol={protocol!r} is not known; use {SPLIT_PROTOCOLS}")
    if protocol == "fixed":
        raise ConfigError("data.split.protocol=fixed takes the dataset's split: see fixed_split")
    seed = int(split_cfg.get("seed", 0))
    fractions = [float(f) for f in split_cfg.get("fractions", [0.7, 0.2, 0.1])]
    n_repeats = split_cfg.get("n_repeats")
    repeat = _split_index(split_cfg, "repeat", n_repeats)
    if protocol == "holdout":
        names = ("train", "val", "test")[: len(fractions)]
        rng_seed = seed if repeat is None else S.repeat_entropy(seed, repeat)
        return S.holdout_split(labels, fractions, seed=rng_seed, groups=groups, names=names)
    n_splits = int(split_cfg.get("n_splits", 2))
    fold = _split_index(split_cfg, "fold", n_splits) or 0
    if len(fractions) != 3 or abs(fractions[2] - 1.0 / n_splits) > 1e-6:
        raise ConfigError(
            f"data.split.fractions={fractions} with protocol=kfold must be [train, val, test] "
            f"with test = 1/n_splits = {1.0 / n_splits:.4g} (e.g. [0.4, 0.1, 0.5] for 2 folds)"
        )
    val_fraction = fractions[1] / (fractions[0] + fractions[1])
    folds = S.kfold_repeat(labels, n_splits, seed, repeat or 0, groups, val_fraction)
    return {name: folds[fold][name] for name in ("train", "val", "test")}


class ClassificationDataModule(LightningDataModule):
    """One classification dataset split into train/val/test subsets.

    Args:
        dataset: a partial of a dataset class (``_partial_: true`` in config), called with
            ``image_size`` to build the full dataset.
        label_level: ADP label level of this data (ADP) or of the pre-training stage it follows
            (ALL-IDB2 in HistoTNet); recorded for sweeps and reports.
        split: ``fractions`` (train/val[/test]), ``seed``, ``group_by`` (``subject`` keeps each
            subject in one subset; needs a dataset with ``subjects``), and the evaluation
            protocol: ``protocol`` (holdout | kfold), ``n_splits``, ``n_repeats``, ``repeat``,
            ``fold`` (see ``protocol_split``; conf/protocol/ sets them for a sweep).
        split_file: a ``split.json`` of an earlier run to reuse exactly.
        normalization: ``train`` (per-channel statistics of the training subset),
            ``imagenet``, ``scalar_train_val`` (one mean/std over train + validation) or
            ``none`` (``NORMALIZATIONS``).
        augment: ``BatchAugment`` settings applied to training batches on the device.
        output_dir: where ``split.json`` is written (the run directory).
        stats_cache_dir: where per-split mean/std are cached.
        val_dataset: optional partial of a separate validation dataset (e.g. the C-NMC
            preliminary test set). When it is given, ``dataset`` is used whole for training
            (no split is drawn) and the test subset is ``test_dataset`` or, without one, the
            validation dataset.
        test_dataset: optional partial of a separate test dataset; without ``val_dataset`` the
            split ``fractions`` (train/val) divide ``dataset``.
        pin_memory, persistent_workers: DataLoader settings (``None``: pinned memory when a GPU
            is present, persistent workers when ``num_workers > 0``).
        cache: decode every image once into a memory-mapped uint8 cache (``data/cache.py``).
        cache_dir: folder of that cache (the app passes ``paths.cache_dir/images``).
        class_weight_min_count: class weights N / max(n_i, this) (null: N / n_i, 0 for empty).
        class_weight_subsets: the subsets whose labels give N and n_i (``["train", "val"]`` in
            the HistoCNN code).
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
        val_dataset: Callable[..., Dataset] | None = None,
        test_dataset: Callable[..., Dataset] | None = None,
        persistent_workers: bool | None = None,
        cache: bool = True,
        cache_dir: str | None = None,
        class_weight_min_count: int | None = None,
        class_weight_subsets: Sequence[str] = ("train",),
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"data.normalization={normalization!r} is not known; use one of {NORMALIZATIONS}"
            )
        if class_weight_min_count is not None and class_weight_min_count < 1:
            raise ConfigError(
                f"data.class_weight_min_count={class_weight_min_count!r} must be >= 1 or null"
            )
        bad = [s for s in class_weight_subsets if s not in ("train", "val")]
        if bad or not class_weight_subsets:
            raise ConfigError(
                f"data.class_weight_subsets={list(class_weight_subsets)} must name 'train' "
                "and/or 'val'"
            )
        self.class_weight_min_count = class_weight_min_count
        self.class_weight_subsets = tuple(class_weight_subsets)
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
        self.external_factories = {
            name: factory
            for name, factory in (("val", val_dataset), ("test", test_dataset))
            if factory is not None
        }
        self.persistent_workers = persistent_workers
        self.cache = cache
        self.cache_dir = cache_dir
        # torch.channels_last when extras.channels_last is set (utils/speed.py)
        self.memory_format = torch.contiguous_format
        self.dataset: Any = None
        self.subsets: dict[str, Subset] = {}
        self.batch_transform: BatchTransform | None = None

    # --------------------------------------------------------------- set-up
    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        # building the image cache or the statistics runs DataLoaders, which draw seeds from the
        # global RNG: keep it untouched so a run's random stream never depends on cache state
        with torch.random.fork_rng(devices=[]):
            self._setup_data()

    def _setup_data(self) -> None:
        self.dataset = self._build(self.dataset_factory)
        if self.external_factories:
            indices = self._external_subsets()
        else:
            indices = self._split_indices()
            self.subsets = {
                name: Subset(self.dataset, idx.tolist()) for name, idx in indices.items()
            }
        self.split_indices = indices
        mean, std = self._normalization_stats(indices)
        self.mean, self.std = mean, std
        self.batch_transform = build_batch_transform(mean, std, self.augment_cfg)
        self._warn_empty_classes(indices)

    def _build(self, factory: Callable[..., Dataset]) -> Any:
        """A dataset at ``image_size``, behind the decoded-image cache when enabled."""
        return maybe_cached(
            factory(image_size=self.image_size),
            self.cache_dir,
            self.cache,
            num_workers=self.num_workers,
        )

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
        elif self.split_cfg.get("protocol") == "fixed":
            indices = fixed_split(self.dataset)
        else:
            indices = protocol_split(labels, self.split_cfg, groups)
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
                    **split_seed_meta(self.split_cfg),
                },
            )
        return indices

    def _external_subsets(self) -> dict[str, Any]:
        """Subsets when validation and/or test data come from their own datasets."""
        external = {name: self._build(factory) for name, factory in self.external_factories.items()}
        if "val" in external:
            indices: dict[str, Any] = {"train": np.arange(len(self.dataset))}
        else:  # only a separate test set: train/val from the split fractions
            fractions = list(self.split_cfg.get("fractions", [0.8, 0.2]))
            if len(fractions) != 2:
                raise ConfigError(
                    f"data.split.fractions={fractions}: with data.test_dataset set and no "
                    "data.val_dataset, give two fractions (train, val)"
                )
            group_by = self.split_cfg.get("group_by")
            indices = S.holdout_split(
                self.dataset.labels,
                fractions,
                seed=int(self.split_cfg.get("seed", 0)),
                groups=getattr(self.dataset, f"{group_by}s") if group_by else None,
                names=("train", "val"),
            )
        self.subsets = {name: Subset(self.dataset, idx.tolist()) for name, idx in indices.items()}
        for name, ds in external.items():
            if list(ds.classes) != list(self.dataset.classes):
                raise ConfigError(
                    f"data.{name}_dataset has classes {ds.classes} but data.dataset has "
                    f"{self.dataset.classes}; both must describe the same task"
                )
            self.subsets[name] = Subset(ds, list(range(len(ds))))
        if "test" not in self.subsets:
            self.subsets["test"] = self.subsets["val"]
        if self.output_dir:  # one file list over all datasets, as split.json stores it
            paths: list[str] = []
            saved: dict[str, Any] = {}
            for name, subset in self.subsets.items():
                ds = subset.dataset
                saved[name] = np.arange(len(subset)) + len(paths)
                paths += [ds.paths[i] for i in subset.indices]
            S.save_split(
                Path(self.output_dir) / "split.json",
                saved,
                paths,
                meta={
                    "split": self.split_cfg,
                    "dataset": type(self.dataset).__name__,
                    "external": sorted(external),
                },
            )
        return indices

    def _normalization_stats(self, indices: dict[str, Any]) -> tuple[list[float], list[float]]:
        if self.normalization == "imagenet":
            return list(stats.IMAGENET_MEAN), list(stats.IMAGENET_STD)
        if self.normalization == "none":
            return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        idx = indices["train"]
        pool_val = "val" in indices and self.subsets["val"].dataset is self.dataset
        if self.normalization == "scalar_train_val" and pool_val:
            idx = np.concatenate([np.asarray(idx), np.asarray(indices["val"])])
        if self.stats_cache_dir:
            mean, std = stats.cached_mean_std(self.dataset, idx, self.stats_cache_dir)
        else:
            mean, std = stats.channel_mean_std(self.dataset, idx)
        if self.normalization == "scalar_train_val":  # pool the channels (equal pixel counts)
            m = float(np.mean(mean))
            s = float(np.sqrt(np.mean(np.square(std) + np.square(np.subtract(mean, m)))))
            return [m, m, m], [s, s, s]
        return mean, std

    def _warn_empty_classes(self, indices: dict[str, Any]) -> None:
        train_idx = indices["train"]
        labels = self.dataset.labels[torch.as_tensor(train_idx, dtype=torch.long)]
        weights = class_weights_from_labels(labels, self.num_classes)
        if self.class_weight_subsets != ("train",) or self.class_weight_min_count is not None:
            if "val" in self.class_weight_subsets and self.subsets["val"].dataset is self.dataset:
                idx = np.concatenate([np.asarray(train_idx), np.asarray(indices["val"])])
                labels = self.dataset.labels[torch.as_tensor(idx, dtype=torch.long)]
            self.class_weights = class_weights_from_labels(
                labels, self.num_classes, self.class_weight_min_count
            )
        else:
            self.class_weights = weights
        empty = [c for c, w in zip(self.dataset.classes, weights.tolist()) if w == 0]
        if empty:
            weight = (
                "loss weight 0"
                if self.class_weight_min_count is None
                else f"loss weight N/{self.class_weight_min_count}"
            )
            log.warning(
                "Classes without samples in the training split (%s): %s",
                weight
                if self.class_weight_min_count is not None
                else "excluded from per-class metrics, " + weight,
                ", ".join(empty),
            )

    # ----------------------------------------------------- checkpointed state
    def state_dict(self) -> dict[str, Any]:
        """Evaluation preprocessing, stored in every checkpoint (used by predict/export)."""
        if self.batch_transform is None:
            return {}
        return {
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "image_size": self.image_size,
            "center_crop": self.augment_cfg.get("center_crop"),
            "center_crop_fraction": self.augment_cfg.get("center_crop_fraction"),
            "classes": list(self.dataset.classes),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the statistics are recomputed from the data in ``setup``."""

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
            persistent_workers=self.persistent_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return make_loader(
            self.subsets["val"],
            self.eval_batch_size,
            False,
            self.num_workers,
            self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def test_dataloader(self) -> DataLoader:
        return make_loader(
            self.subsets["test"],
            self.eval_batch_size,
            False,
            self.num_workers,
            self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Augment (training only) and normalise the uint8 batch on its device."""
        if self.batch_transform is not None and "image" in batch:
            training = self.trainer is not None and self.trainer.training
            batch["image"] = self.batch_transform.to(batch["image"].device)(
                batch["image"], train=training
            ).contiguous(memory_format=self.memory_format)
        return batch
