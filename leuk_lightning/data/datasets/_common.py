"""Helpers shared by the dataset modules: decoding, resizing, file listing, error wrapping.

Every dataset in this package is a plain ``torch.utils.data.Dataset`` whose samples are dicts
``{"image": uint8 [3, H, W] RGB tensor, "label": tensor, "path": str, ...}``. The shared base
class :class:`ImageFolderDataset` implements decoding, the optional square resize, the
``transforms`` hook and the ``on_bad_image`` policy so that each dataset module only has to
find its files and labels.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as tvf

from leuk_lightning.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: files that operating systems drop into image folders; never treated as data
IGNORED_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini"})
ON_BAD_IMAGE_CHOICES = ("error", "skip")
#: how many offending names an error message lists before summarising the rest
MAX_NAMES_IN_MESSAGE = 5

Transform = Callable[[dict[str, Any]], dict[str, Any]]


def decode_image(path: str | os.PathLike[str], image_size: int | None = None) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor ``[3, H, W]``, optionally resized square.

    Any failure (missing, truncated or non-image file) becomes one :class:`DataError`
    ``"cannot decode image <path>: <reason>"`` so the user learns which file is broken.
    """
    try:
        with Image.open(path) as img:
            img.load()  # forces a full decode: truncated files fail here, not later
            hwc = _to_rgb8(img)
    except Exception as exc:  # noqa: BLE001 - every decoder failure is reported the same way
        hwc = _decode_high_bit_depth(path)  # e.g. 48-bit RGB TIFF, which Pillow cannot read
        if hwc is None:
            raise DataError(f"cannot decode image {path}: {exc}") from exc
    # HWC -> CHW in numpy: ~25x faster than torch's permute().contiguous() on uint8
    image = torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))
    return resize_square(image, image_size)


#: Pillow modes of images with more than 8 bits per sample (16-bit TIFF/PNG, 32-bit int, float)
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Samples of any bit depth -> uint8 over their type's range: 16-bit integers / 257,
    floats in [0, 1] x 255; wider or signed data (32-bit int, floats above 1) over 0..max.
    Pillow's ``convert("RGB")`` instead clips 16-bit values at 255: a 16-bit image decodes
    as all white."""
    if array.dtype == np.uint8:
        return array
    data = array.astype(np.float64)
    if np.issubdtype(array.dtype, np.floating):
        high = 1.0 if np.nanmax(data, initial=0.0) <= 1.0 else None
    elif np.issubdtype(array.dtype, np.integer) and np.iinfo(array.dtype).bits <= 16:
        high = float(np.iinfo(array.dtype).max) if array.dtype.kind == "u" else None
    else:
        high = 65535.0 if np.max(data, initial=0.0) <= 65535 else None
    if high is None:  # no fixed range: stretch 0..max
        high = max(float(np.nanmax(data, initial=0.0)), 1e-12)
    data = np.nan_to_num(np.clip(data, 0.0, high) * (255.0 / high))
    return np.rint(data).astype(np.uint8)


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """A decoded Pillow image -> ``[H, W, 3]`` uint8, high-bit-depth modes scaled, not clipped."""
    if img.mode in _HIGH_BIT_MODES:
        gray = scale_to_uint8(np.asarray(img))
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _decode_high_bit_depth(path: str | os.PathLike[str]) -> np.ndarray | None:
    """OpenCV's decoder for what Pillow refuses (16-bit colour TIFF/PNG); None if it fails."""
    try:
        import cv2

        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    except Exception:  # noqa: BLE001 - no OpenCV or no decoder: the caller reports the file
        return None
    if array is None or array.ndim not in (2, 3):
        return None
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    elif array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    elif array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    else:
        return None
    return np.ascontiguousarray(scale_to_uint8(array))


def require_all_classes(
    labels: Sequence[int],
    classes: Sequence[str],
    where: str,
    allow_missing: bool,
    source: Callable[[str], str] | None = None,
) -> None:
    """A single-label training set without any image of a class trains a model that cannot
    predict it and reports a meaningless accuracy: a :class:`DataError` naming the class, unless
    ``allow_missing_classes`` is set (then a warning)."""
    present = set(int(v) for v in labels)
    missing = [name for i, name in enumerate(classes) if i not in present]
    if not missing:
        return
    named = [f"'{m}'" + (f" ({source(m)})" if source else "") for m in missing]
    text = f"{where}: no images of class {', '.join(named)} (classes: {list(classes)})"
    if allow_missing:
        logger.warning("%s; allowed by allow_missing_classes=true", text)
        return
    raise DataError(
        f"{text}; a model trained without it reports meaningless accuracy. Add the missing "
        "class folder/files, or set data.dataset.allow_missing_classes=true to train anyway"
    )


def resize_square(image: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """Resize ``[C, H, W]`` to ``image_size`` x ``image_size`` (antialiased); ``None`` keeps it."""
    if image_size is None or tuple(image.shape[-2:]) == (image_size, image_size):
        return image
    return tvf.resize(image, [image_size, image_size], antialias=True)


def image_is_readable(path: str | os.PathLike[str]) -> bool:
    """True when the file fully decodes (``Image.verify`` misses truncated pixel data)."""
    try:
        with Image.open(path) as img:
            img.load()
    except Exception:  # noqa: BLE001 - any failure means unreadable
        return False
    return True


def check_image_size(image_size: int | None) -> int | None:
    """Validate the ``image_size`` option (positive int or None)."""
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise ConfigError(f"image_size={image_size!r} must be a positive integer or null")
    if image_size <= 0:
        raise ConfigError(f"image_size={image_size} must be a positive integer or null")
    return int(image_size)


def check_on_bad_image(on_bad_image: str) -> str:
    """Validate the ``on_bad_image`` option."""
    if on_bad_image not in ON_BAD_IMAGE_CHOICES:
        raise ConfigError(
            f"on_bad_image={on_bad_image!r} is not known; use one of {list(ON_BAD_IMAGE_CHOICES)}"
        )
    return on_bad_image


def require_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``path`` as a Path, or raise DataError when it is not an existing directory."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} {p} does not exist")
    if not p.is_dir():
        raise DataError(f"{what} {p} is not a directory")
    return p


def is_ignored_name(name: str) -> bool:
    """Hidden files and OS thumbnails are not data files."""
    return name.startswith(".") or name.lower() in IGNORED_FILE_NAMES


def list_files(folder: str | os.PathLike[str]) -> list[str]:
    """Sorted names of the regular data files directly inside ``folder``."""
    with os.scandir(folder) as it:
        names = [e.name for e in it if not is_ignored_name(e.name) and e.is_file()]
    return sorted(names)


def summarize(items: Sequence[str], limit: int = MAX_NAMES_IN_MESSAGE) -> str:
    """``'a, b, c'`` or ``'a, b, c, ... (12 in all)'`` for error messages."""
    shown = ", ".join(str(x) for x in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items)} in all)"
    return shown


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``2.bmp`` before ``10.bmp``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


class ImageFolderDataset(Dataset):
    """Base of the file-backed datasets: decoding, resize, transforms and bad-image policy.

    Subclasses fill ``self.paths`` (list of str), ``self.labels`` (tensor, first dim = items),
    ``self.classes`` and optionally per-item extra fields via :meth:`_register_extra`, then call
    :meth:`_apply_bad_image_policy` at the end of their constructor.
    """

    paths: list[str]
    labels: torch.Tensor
    classes: list[str]

    def __init__(
        self,
        image_size: int | None = None,
        transforms: Transform | None = None,
        on_bad_image: str = "error",
    ) -> None:
        self.image_size = check_image_size(image_size)
        self.transforms = transforms
        self.on_bad_image = check_on_bad_image(on_bad_image)
        self.skipped: list[str] = []
        self._extras: dict[str, list[Any] | torch.Tensor] = {}

    # -- per-item extra sample fields -------------------------------------------------------
    def _register_extra(self, key: str, values: list[Any] | torch.Tensor) -> None:
        """Add a per-item field that every sample carries under ``key``."""
        self._extras[key] = values

    def _keep(self, keep: Sequence[int]) -> None:
        """Restrict the dataset to the item positions in ``keep`` (paths, labels, extras)."""
        index = torch.as_tensor(list(keep), dtype=torch.long)
        self.paths = [self.paths[i] for i in keep]
        self.labels = self.labels[index]
        for key, values in list(self._extras.items()):
            if isinstance(values, torch.Tensor):
                self._extras[key] = values[index]
            else:
                self._extras[key] = [values[i] for i in keep]
        self._after_keep(list(keep))

    def _after_keep(self, keep: list[int]) -> None:
        """Hook for subclasses that hold more per-item attributes."""

    def _apply_bad_image_policy(self) -> None:
        """In ``skip`` mode decode every image once and drop the unreadable ones (logged)."""
        if self.on_bad_image != "skip":
            return
        bad = [i for i, p in enumerate(self.paths) if not image_is_readable(p)]
        if not bad:
            return
        self.skipped = [self.paths[i] for i in bad]
        bad_set = set(bad)
        self._keep([i for i in range(len(self.paths)) if i not in bad_set])
        logger.warning(
            "%s: skipped %d unreadable image(s): %s",
            type(self).__name__,
            len(self.skipped),
            ", ".join(self.skipped),
        )

    # -- Dataset protocol --------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes (width of the multi-hot vector for multi-label datasets)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, index: int) -> torch.Tensor:
        """Decoded (and resized) image of item ``index`` without transforms."""
        return decode_image(self.paths[index], self.image_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {
            "image": self.load_image(index),
            "label": self.labels[index].clone(),
            "path": self.paths[index],
        }
        for key, values in self._extras.items():
            value = values[index]
            sample[key] = value.clone() if isinstance(value, torch.Tensor) else value
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, classes={self.num_classes})"


def first_missing(expected: Iterable[str], present: set[str]) -> list[str]:
    """Items of ``expected`` (in order) that are not in ``present``."""
    return [x for x in expected if x not in present]
