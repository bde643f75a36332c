"""Per-channel mean/std of a training subset (for normalisation), with a JSON cache.

Normalising with statistics of the training split only keeps test data out of the
preprocessing. Statistics are in the [0, 1] scale that ``ToDtype(float32, scale=True)``
produces, over every pixel of the decoded (and resized) images, without augmentation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from leuk_lightning.errors import DataError, StorageError
from leuk_lightning.utils.io import atomic_write_text

log = logging.getLogger(__name__)

IMAGENET_MEAN: list[float] = [0.485, 0.456, 0.406]
IMAGENET_STD: list[float] = [0.229, 0.224, 0.225]


class _PixelSums(Dataset):
    """Per image: float64 [3, 3] = (sum, sum of squares, pixel count) per channel."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> torch.Tensor:
        i = self.indices[k]
        if hasattr(self.dataset, "load_image"):  # raw image, no augmentation
            image = self.dataset.load_image(i)
        else:
            image = self.dataset[i]["image"]
        x = image.to(torch.float64).flatten(1)
        if image.dtype == torch.uint8:
            x = x / 255.0
        count = torch.full((x.shape[0],), float(x.shape[1]), dtype=torch.float64)
        return torch.stack([x.sum(1), (x * x).sum(1), count])


def channel_mean_std(
    dataset: Any, indices: Sequence[int], batch_size: int = 64, num_workers: int = 0
) -> tuple[list[float], list[float]]:
    """Mean and (population) std per channel over all pixels of ``dataset[indices]``."""
    if len(indices) == 0:
        raise DataError("cannot compute channel statistics of an empty training subset")
    loader = DataLoader(
        _PixelSums(dataset, indices), batch_size=batch_size, num_workers=num_workers
    )
    total = torch.zeros(3, 3, dtype=torch.float64)
    for batch in loader:
        total += batch.sum(0)
    mean = total[0] / total[2]
    var = (total[1] / total[2] - mean * mean).clamp_min(0.0)
    return mean.tolist(), var.sqrt().tolist()


def split_key(paths: Sequence[str], extra: str = "") -> str:
    """Stable key of a subset: sha256 of its sorted paths (+ ``extra``, e.g. image size)."""
    h = hashlib.sha256()
    for p in sorted(os.fspath(x) for x in paths):
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    h.update(extra.encode("utf-8"))
    return h.hexdigest()[:16]


def cached_mean_std(
    dataset: Any,
    indices: Sequence[int],
    cache_dir: str | os.PathLike[str],
    key: str | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[list[float], list[float]]:
    """:func:`channel_mean_std`, cached in ``cache_dir/mean_std_<key>.json``.

    ``key`` defaults to :func:`split_key` of the subset's paths and the dataset's
    ``image_size``, so another split or size never reuses stale numbers.
    """
    if key is None:
        paths = [dataset.paths[int(i)] for i in indices]
        key = split_key(paths, extra=f"image_size={getattr(dataset, 'image_size', None)}")
    cache = Path(cache_dir) / f"mean_std_{key}.json"
    if cache.is_file():
        try:
            doc = json.loads(cache.read_text())
            mean, std = [float(v) for v in doc["mean"]], [float(v) for v in doc["std"]]
            if len(mean) == len(std) == 3 and np.all(np.isfinite(mean + std)):
                return mean, std
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable cache: recompute and overwrite
    mean, std = channel_mean_std(dataset, indices, batch_size, num_workers)
    text = json.dumps({"mean": mean, "std": std, "n_images": len(indices)}, indent=2) + "\n"
    try:
        atomic_write_text(cache, text)
    except StorageError as exc:  # a read-only shared cache: the statistics are still right
        log.warning("Statistics not cached: %s", exc)
    return mean, std
