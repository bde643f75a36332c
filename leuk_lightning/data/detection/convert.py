"""C-NMC -> Pascal VOC: one box per segmented crop, no annotator needed.

C-NMC crops show one segmented cell on a black background, so a box needs no annotator:
:func:`cell_box` thresholds ``max(R, G, B) > threshold`` and takes the bounding box of the
largest 8-connected component (``mode="largest"``, robust to specks of stain noise) or of all
non-black pixels (``mode="all"``). :func:`cnmc_to_voc` does this for every training image of a
C-NMC folder (class = its ``all``/``hem`` folder) and writes ``<out>/images`` +
``<out>/annotations/*.xml``::

    leuk-lightning cnmc-to-voc <C-NMC root> <out> [--per-class 150] [--link]
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from leuk_lightning.data.detection.voc import (
    ANNOTATIONS_DIR,
    IMAGES_DIR,
    VocAnnotation,
    VocObject,
    write_voc_xml,
)
from leuk_lightning.errors import ConfigError, DataError

log = logging.getLogger(__name__)

BOX_MODES = ("largest", "all")


def cell_box(
    image: np.ndarray, threshold: int = 10, mode: str = "largest"
) -> tuple[int, int, int, int] | None:
    """Box (pixel-edge xyxy) of the cell in a black-background crop; None when all is black.

    ``image`` is HxWx3 uint8. Foreground = ``max(R, G, B) > threshold``. ``mode="largest"``
    takes the largest 8-connected foreground component (ignores isolated noise pixels),
    ``mode="all"`` the bounding box of every foreground pixel.
    """
    if mode not in BOX_MODES:
        raise ConfigError(f"box mode {mode!r} is not known; use one of {list(BOX_MODES)}")
    fg = np.asarray(image).max(axis=-1) > threshold
    if not fg.any():
        return None
    if mode == "largest":
        labels, n = ndimage.label(fg, structure=np.ones((3, 3), dtype=bool))
        if n > 1:
            sizes = np.bincount(labels.ravel())[1:]
            fg = labels == (int(np.argmax(sizes)) + 1)
    rows = np.flatnonzero(fg.any(axis=1))
    cols = np.flatnonzero(fg.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:  # other file system: fall back to a symlink
            os.symlink(os.path.abspath(src), dst)
            return
    shutil.copy2(src, dst)


def cnmc_to_voc(
    cnmc_root: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    threshold: int = 10,
    mode: str = "largest",
    per_class: int | None = None,
    seed: int = 0,
    link: bool = False,
    class_names: Sequence[str] = ("hem", "all"),
) -> list[Path]:
    """Write LabelImg VOC annotations for the C-NMC training images under ``cnmc_root``.

    Every image found by :class:`CnmcDataset` (``split="train"``) is copied (``link=True``:
    hard-linked, or symlinked across file systems) to ``out_root/images`` and gets
    ``out_root/annotations/<stem>.xml`` with one object: its class (folder ``all``/``hem``,
    named by ``class_names[label]``) and the box from :func:`cell_box`. ``per_class`` keeps a
    seeded random selection of that many images per class (the paper used 150 + 150).
    An image without any non-black pixel is a DataError naming it. Returns the XML paths.
    """
    from leuk_lightning.data.datasets.cnmc import CnmcDataset

    dataset = CnmcDataset(cnmc_root, split="train")
    labels = dataset.labels.numpy()
    order = np.arange(len(labels))
    if per_class is not None:
        rng = np.random.default_rng(seed)
        chosen = []
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            if per_class > len(members):
                raise ConfigError(
                    f"per_class={per_class} but {cnmc_root} has only {len(members)} "
                    f"'{class_names[label]}' images"
                )
            chosen.append(rng.choice(members, size=per_class, replace=False))
        order = np.sort(np.concatenate(chosen))
    out = Path(out_root)
    written = []
    for i in order:
        src = Path(dataset.paths[i])
        try:
            with Image.open(src) as img:
                rgb = np.asarray(img.convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is reported the same way
            raise DataError(f"cannot decode image {src}: {exc}") from exc
        box = cell_box(rgb, threshold, mode)
        if box is None:
            raise DataError(
                f"C-NMC image {src} has no pixel brighter than threshold={threshold}: no cell "
                "to box (lower the threshold or remove the image)"
            )
        dst = out / IMAGES_DIR / src.name
        _place(src, dst, link)
        ann = VocAnnotation(
            filename=src.name,
            width=rgb.shape[1],
            height=rgb.shape[0],
            depth=3,
            folder=IMAGES_DIR,
            path=str(dst.resolve()),
            objects=[VocObject(class_names[int(labels[i])], *box)],
        )
        written.append(write_voc_xml(out / ANNOTATIONS_DIR / f"{src.stem}.xml", ann))
    log.info("wrote %d VOC annotations under %s", len(written), out)
    return written
