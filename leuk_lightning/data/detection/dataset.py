"""Cell boxes in Pascal VOC XML as LabelImg writes them (the YOLOv3 cell-detector paper).

Layout (``root``)::

    images/<name>.<jpg|png|bmp|tif>        the pictures (any PIL-readable format)
    annotations/<name>.xml                 LabelImg Pascal VOC, one <object> per box
    ImageSets/Main/<split>.txt             optional VOC lists of image ids (file stems)

Every XML under ``annotations/`` is one item; its ``<filename>`` names the picture in
``images/`` (LabelImg's ``<path>`` holds the annotator's own absolute path and is ignored).
``split`` (e.g. ``"train"``) restricts the items to the stems listed in
``ImageSets/Main/<split>.txt``. Class names come from ``classes`` and are matched
case-insensitively (the paper's LabelImg labels are ``ALL``/``HEM``); label ``i`` is
``classes[i]``. The XML format and the box conventions are documented in
:mod:`leuk_lightning.data.detection.voc`.

All annotations are parsed when the dataset is built, so defects surface at once, each as a
DataError naming the file: malformed XML, an XML whose picture is missing, a box outside the
picture (its real size, read from the file header) or with ``xmax <= xmin`` / ``ymax <= ymin``,
an unknown class name.

Samples: ``{"image": tv_tensors.Image uint8 [3, H, W], "boxes": tv_tensors.BoundingBoxes
float32 [N, 4] (XYXY, pixels), "labels": int64 [N], "path": str}``; ``image_size`` resizes the
picture to a square and scales the boxes with it. ``transforms`` (e.g. a torchvision.transforms.v2
pipeline) receives and returns the sample dict.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from leuk_lightning.data.datasets._common import (
    check_image_size,
    decode_image,
    list_files,
    natural_key,
    require_dir,
    resize_square,
)
from leuk_lightning.data.detection.voc import ANNOTATIONS_DIR, IMAGES_DIR, read_voc_xml
from leuk_lightning.errors import ConfigError, DataError

CELLS_VOC_CLASSES = ("all", "hem")


class CellsVocDataset(Dataset):
    """Images + LabelImg VOC boxes; attributes ``classes``, ``paths`` (images),
    ``annotation_paths``, ``boxes`` / ``box_labels`` (per image), ``image_sizes`` (w, h) and
    ``labels`` (the dominant, i.e. most frequent, class of each image; ties go to the lower index;
    -1 without boxes),
    which the detection datamodule stratifies splits by."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        classes: Sequence[str] = CELLS_VOC_CLASSES,
        image_size: int | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        split: str | None = None,
    ) -> None:
        self.root = require_dir(root, "cells VOC folder")
        self.classes = [str(c) for c in classes]
        if not self.classes or len({c.lower() for c in self.classes}) != len(self.classes):
            raise ConfigError(f"cells VOC classes={self.classes} must be distinct and non-empty")
        self.image_size = check_image_size(image_size)
        self.transforms = transforms
        self.split = split
        ann_dir = require_dir(self.root / ANNOTATIONS_DIR, "cells VOC annotations folder")
        img_dir = require_dir(self.root / IMAGES_DIR, "cells VOC images folder")
        names = [n for n in list_files(ann_dir) if n.lower().endswith(".xml")]
        if split is not None:
            names = self._split_names(names, split)
        if not names:
            raise DataError(f"no VOC annotations (*.xml) found in {ann_dir}")
        names.sort(key=natural_key)
        index = {c.lower(): i for i, c in enumerate(self.classes)}
        self.paths: list[str] = []
        self.annotation_paths: list[str] = []
        self.boxes: list[torch.Tensor] = []
        self.box_labels: list[torch.Tensor] = []
        self.image_sizes: list[tuple[int, int]] = []  # (width, height) as stored
        for name in names:
            xml_path = ann_dir / name
            ann = read_voc_xml(xml_path)
            image_path = img_dir / Path(ann.filename.replace("\\", "/")).name
            if not image_path.is_file():
                raise DataError(
                    f"VOC annotation {xml_path} describes image {ann.filename!r}, but "
                    f"{image_path} does not exist"
                )
            width, height = self._image_size_of(image_path)
            labels = []
            for k, obj in enumerate(ann.objects, start=1):
                if obj.name.lower() not in index:
                    raise DataError(
                        f"VOC annotation {xml_path}: object {k} has class {obj.name!r}, not one "
                        f"of {self.classes} (set data.dataset.classes to the annotation's names)"
                    )
                x0, y0, x1, y1 = obj.box
                if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                    raise DataError(
                        f"VOC annotation {xml_path}: object {k} ({obj.name}) box "
                        f"({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {width}x{height} "
                        f"image {image_path.name}"
                    )
                labels.append(index[obj.name.lower()])
            self.paths.append(str(image_path))
            self.image_sizes.append((int(width), int(height)))
            self.annotation_paths.append(str(xml_path))
            self.boxes.append(
                torch.tensor([o.box for o in ann.objects], dtype=torch.float32).reshape(-1, 4)
            )
            self.box_labels.append(torch.tensor(labels, dtype=torch.int64))
        self.labels = torch.tensor(
            [
                int(torch.bincount(lab, minlength=len(self.classes)).argmax()) if len(lab) else -1
                for lab in self.box_labels
            ],
            dtype=torch.int64,
        )

    def _split_names(self, names: list[str], split: str) -> list[str]:
        listing = self.root / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            raise ConfigError(
                f"cells VOC split={split!r} needs {listing} (one image id per line); "
                "use split=null for every annotation"
            )
        stems = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        by_stem = {Path(n).stem: n for n in names}
        missing = [s for s in stems if s not in by_stem]
        if missing:
            raise DataError(f"{listing} lists ids without an annotation: {missing[:5]}")
        return [by_stem[s] for s in stems]

    @staticmethod
    def _image_size_of(path: Path) -> tuple[int, int]:
        try:
            with Image.open(path) as img:  # reads the header only
                return img.size
        except Exception as exc:  # noqa: BLE001 - any decoder failure is reported the same way
            raise DataError(f"cannot decode image {path}: {exc}") from exc

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = decode_image(self.paths[index])
        boxes = self.boxes[index].clone()
        if self.image_size is not None:
            h, w = image.shape[-2:]
            image = resize_square(image, self.image_size)
            scale = torch.tensor([self.image_size / w, self.image_size / h] * 2)
            boxes = boxes * scale
        sample: dict[str, Any] = {
            "image": tv_tensors.Image(image),
            "boxes": tv_tensors.BoundingBoxes(
                boxes, format="XYXY", canvas_size=tuple(image.shape[-2:])
            ),
            "labels": self.box_labels[index].clone(),
            "path": self.paths[index],
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def __repr__(self) -> str:
        n_boxes = sum(len(b) for b in self.boxes)
        return f"CellsVocDataset(n={len(self)}, boxes={n_boxes}, classes={self.classes})"


__all__ = ["CELLS_VOC_CLASSES", "CellsVocDataset"]
