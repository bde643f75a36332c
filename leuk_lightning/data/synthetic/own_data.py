"""Look-alike "own data" in the two generic layouts: a nested class-folder tree and a CSV manifest.

Four classes by default (named after the four-class ALL set of Aria et al.), each drawn
differently so a tiny network can tell them apart: normal/blast cell x smear/black background.
Every class has ``n_subjects`` patients; a patient belongs to one class (as in such sets), its
images lie in ``<class>/<patient>/`` (folder layout) or carry its id (``subject`` column).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from leuk_lightning.data.synthetic.render import _streams, render_blood_cell
from leuk_lightning.errors import ConfigError

OWN_CLASSES = ("benign", "early_pre_b", "pre_b", "pro_b")
#: (blast, black background) per class index, cycling for more classes
_LOOKS = ((False, False), (True, False), (False, True), (True, True))
_FORMATS = (("png", "PNG"), ("jpg", "JPEG"), ("bmp", "BMP"), ("tif", "TIFF"))


def _plan(classes: Sequence[str], n_subjects: int, images_per_subject: int):
    """(class index, class, subject, image number) of every image, in a fixed order."""
    if len(classes) < 2 or n_subjects < 1 or images_per_subject < 1:
        raise ConfigError("own-data writer needs two classes, one subject, one image each")
    for c, name in enumerate(classes):
        for s in range(n_subjects):
            for j in range(images_per_subject):
                yield c, name, f"p{c}{s:02d}", j


def write_image_folder(
    root: str | os.PathLike[str],
    classes: Sequence[str] = OWN_CLASSES,
    n_subjects: int = 3,
    images_per_subject: int = 4,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """``root/<class>/<subject>/<n>.<ext>`` (nested, mixed formats, natural-order names);
    returns ``root``."""
    _, pix = _streams(seed)
    root_path = Path(root)
    for c, name, subject, j in _plan(classes, n_subjects, images_per_subject):
        blast, black = _LOOKS[c % len(_LOOKS)]
        ext, fmt = _FORMATS[j % len(_FORMATS)]
        folder = root_path / name / subject
        folder.mkdir(parents=True, exist_ok=True)
        img = render_blood_cell(pix, blast, size, size, black_background=black)
        img.save(folder / f"{j + 1}.{ext}", format=fmt)
    return root_path


def write_manifest(
    root: str | os.PathLike[str],
    classes: Sequence[str] = OWN_CLASSES,
    n_subjects: int = 3,
    images_per_subject: int = 4,
    size: int = 32,
    seed: int = 0,
    with_split: bool = True,
) -> Path:
    """``root/cells.csv`` (``path,label,subject[,split]``) over ``root/images/<n>.png``;
    returns the CSV path. The split column puts each subject's images in one subset (the
    first subject of every class in ``test``, the second in ``val``, the rest in ``train``)."""
    _, pix = _streams(seed)
    root_path = Path(root)
    (root_path / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for n, (c, name, subject, _j) in enumerate(_plan(classes, n_subjects, images_per_subject)):
        blast, black = _LOOKS[c % len(_LOOKS)]
        rel = f"images/{n:04d}_{subject}.png"
        render_blood_cell(pix, blast, size, size, black_background=black).save(root_path / rel)
        s = int(subject[2:])
        split = "test" if s == 0 else "val" if s == 1 else "train"
        rows.append([rel, name, subject] + ([split] if with_split else []))
    csv_path = root_path / "cells.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "subject"] + (["split"] if with_split else []))
        writer.writerows(rows)
    return csv_path


__all__ = ["OWN_CLASSES", "write_image_folder", "write_manifest"]
