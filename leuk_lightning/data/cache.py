"""Decode every image once: a memory-mapped uint8 cache per (dataset, image size).

Decoding a 450 px BMP (C-NMC) or a 2592 px TIF (ALL-IDB) and resizing it costs milliseconds per
image and is repeated every epoch by a plain file-backed dataset. :class:`CachedDataset` decodes
each image once into ``<cache_dir>/<Dataset>-<size>px-<key>.npy`` (``[N, 3, H, W]`` uint8, read
through ``numpy.memmap``) and serves samples from it, so an epoch is a memory copy per image.

* ``key`` identifies *which* images (a hash of the dataset's ordered ``paths``); the index file
  ``<...>.json`` beside the array records a fingerprint of the source files (size and mtime of
  each), so a cache whose files changed on disk is rebuilt, never served stale.
* The array is written to a temporary file and renamed into place, and the index is written
  last (after removing the old one): an interrupted build leaves no cache that looks valid.
* A file lock makes concurrent builders (DDP ranks, parallel sweep jobs) wait for one build.

Wrap any dataset that decodes through ``load_image(index)`` and exposes ``paths`` (the datasets
of :mod:`leuk_lightning.data.datasets`): ``maybe_cached(dataset, cache_dir, enabled)``. The
wrapper returns the same samples (same keys, values and ``transforms``) and forwards every other
attribute (``classes``, ``labels``, ``paths``, ``subjects``, ``slides``, ...) to the dataset.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from leuk_lightning.errors import DataError, StorageError
from leuk_lightning.utils.io import atomic_write_json, file_lock

log = logging.getLogger(__name__)

CACHE_VERSION = 1
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


class VariableImageSize(DataError):
    """The images differ in size and no ``image_size`` makes them equal: nothing to stack."""


def _sha(items: list[str]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def source_fingerprint(paths: list[str]) -> str:
    """Hash of every source file's path, size and modification time (ns), in dataset order."""
    entries = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as exc:
            raise DataError(f"cannot cache image {p}: {exc}") from exc
        entries.append(f"{p}|{st.st_size}|{st.st_mtime_ns}")
    return _sha(entries)


class _Decode(Dataset):
    """``(index, decoded image)`` pairs, so the build can decode in DataLoader workers."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, self.dataset.load_image(index)


class CachedDataset(Dataset):
    """``dataset`` with its decoded images served from a memory-mapped uint8 cache.

    Args:
        dataset: a dataset with ``paths``, ``load_image(index)`` and a ``__getitem__`` that
            gets its image through ``self.load_image`` (``ImageFolderDataset`` subclasses).
        cache_dir: folder of the cache files (``paths.cache_dir/images`` in the app).
        num_workers: decoding processes of the one-time build (0: in this process).
    """

    def __init__(self, dataset: Any, cache_dir: str | os.PathLike[str], num_workers: int = 0):
        if not hasattr(dataset, "load_image") or not hasattr(dataset, "paths"):
            raise TypeError(f"{type(dataset).__name__} has no load_image()/paths to cache")
        self.dataset = dataset
        paths = [str(p) for p in dataset.paths]
        size = getattr(dataset, "image_size", None)
        name = f"{type(dataset).__name__}-{size if size else 'native'}px-{_sha(paths)}"
        self.cache_dir = Path(cache_dir)
        self.array_path = self.cache_dir / f"{name}.npy"
        self.index_path = self.cache_dir / f"{name}.json"
        self.num_workers = num_workers
        self._array: np.ndarray | None = None
        self.built = self._ensure(paths, size)
        # a shallow copy of the dataset whose load_image reads the cache: its own __getitem__
        # (labels, extras, transforms) then builds exactly the samples it always builds
        self._view = copy.copy(dataset)
        self._view.load_image = self.load_image

    # ----------------------------------------------------------------- cache files
    def _valid_index(self, fingerprint: str, n: int) -> bool:
        try:
            index = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            return False
        if (
            index.get("version") != CACHE_VERSION
            or index.get("fingerprint") != fingerprint
            or index.get("n") != n
            or not self.array_path.is_file()
        ):
            return False
        try:
            array = np.load(self.array_path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        return list(array.shape) == index.get("shape") and array.dtype == np.uint8

    def _ensure(self, paths: list[str], size: int | None) -> bool:
        """Use the cache when it matches the files on disk; otherwise (re)build it."""
        fingerprint = source_fingerprint(paths)
        if self._valid_index(fingerprint, len(paths)):
            return False
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(str(self.array_path) + ".lock", f"the image cache {self.array_path}"):
            # under the lock nobody else builds this array: any temp file is a killed build's
            for stale in self.array_path.parent.glob(f".{self.array_path.name}.tmp-*"):
                log.info("Removing %s, left by an interrupted cache build", stale)
                stale.unlink(missing_ok=True)
            if self._valid_index(fingerprint, len(paths)):  # built by another process meanwhile
                return False
            self._build(paths, size, fingerprint)
        return True

    def _build(self, paths: list[str], size: int | None, fingerprint: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        n = len(paths)
        if n == 0:
            raise DataError(f"{type(self.dataset).__name__}: no images to cache")
        first = self.dataset.load_image(0)
        shape = (n, *first.shape)
        tmp = self.array_path.with_name(f".{self.array_path.name}.tmp-{os.getpid()}")
        log.info(
            "Caching %d decoded images (%s) in %s", n, "x".join(map(str, shape[1:])), tmp.parent
        )
        start = time.perf_counter()
        try:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            loader = DataLoader(
                _Decode(self.dataset),
                batch_size=None,
                num_workers=self.num_workers,
                generator=torch.Generator(),  # leaves the global RNG (and the run) untouched
            )
            columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(
                "[progress.description]{task.description}", *columns, transient=True
            ) as progress:
                task = progress.add_task(f"caching {type(self.dataset).__name__}", total=n)
                for index, image in loader:
                    if tuple(image.shape) != shape[1:]:
                        raise VariableImageSize(
                            f"cannot cache {paths[index]}: size {tuple(image.shape)} differs "
                            f"from {shape[1:]}; set data.image_size to resize all images"
                        )
                    array[index] = image.numpy()
                    progress.advance(task)
            array.flush()
            del array
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            self.index_path.unlink(missing_ok=True)  # no moment with a new array + old index
            os.replace(tmp, self.array_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        atomic_write_json(
            self.index_path,
            {
                "version": CACHE_VERSION,
                "dataset": type(self.dataset).__name__,
                "image_size": size,
                "n": n,
                "shape": list(shape),
                "fingerprint": fingerprint,
                "paths": paths,
            },
        )
        log.info("Cached %d images in %.1f s (%s)", n, time.perf_counter() - start, self.array_path)

    # ----------------------------------------------------------------- dataset protocol
    def images(self) -> np.ndarray:
        """The memory-mapped ``[N, 3, H, W]`` uint8 array (opened lazily in each process)."""
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        return self._array

    def load_image(self, index: int) -> torch.Tensor:
        """Image ``index`` as the wrapped dataset decodes it, copied out of the cache."""
        return torch.from_numpy(np.array(self.images()[index]))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._view[index]

    def __getattr__(self, name: str) -> Any:
        # only called for attributes not found on the wrapper: classes, labels, subjects, ...
        if name.startswith("__") or name in {"dataset", "_view", "_array"}:
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None  # each DataLoader worker maps the file itself
        return state

    def __repr__(self) -> str:
        return f"CachedDataset({self.dataset!r}, {self.array_path.name})"


def maybe_cached(
    dataset: Any,
    cache_dir: str | os.PathLike[str] | None,
    enabled: bool = True,
    num_workers: int = 0,
) -> Any:
    """``CachedDataset(dataset, cache_dir)`` when caching is on and possible, else ``dataset``.

    Caching is skipped (with a log line) when it is disabled, when no ``cache_dir`` is given, when
    the dataset cannot be cached (no ``load_image``/``paths``) or when its images differ in size
    and no ``image_size`` is set.
    """
    if not enabled:
        return dataset
    if cache_dir is None:
        log.info("No cache_dir given: images are decoded on every access")
        return dataset
    if isinstance(dataset, CachedDataset):
        return dataset
    if not hasattr(dataset, "load_image") or not hasattr(dataset, "paths"):
        log.info("%s cannot be cached (no load_image/paths)", type(dataset).__name__)
        return dataset
    try:
        return CachedDataset(dataset, cache_dir, num_workers=num_workers)
    except VariableImageSize as exc:
        log.warning("Image cache not used: %s", exc)
        return dataset
    except (OSError, StorageError) as exc:  # read-only or full cache folder: still train
        if isinstance(exc, StorageError) or exc.errno in _UNWRITABLE:
            log.warning(
                "Image cache not used (cannot write %s: %s): images are decoded on every access",
                cache_dir,
                exc.strerror or exc,
            )
            return dataset
        raise


__all__ = ["CachedDataset", "maybe_cached", "source_fingerprint", "VariableImageSize"]
