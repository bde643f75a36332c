"""Your own cells, listed in a CSV manifest: ``path,label[,subject][,split]``.

On-disk layout::

    cells.csv                  header + one row per image, UTF-8 (a BOM is fine)
    images/...                 anywhere; relative paths are relative to the CSV's folder

    path,label,subject,split
    images/p01/001.png,blast,p01,train
    images/p07/002.jpg,normal,p07,test

Columns (header names, any order, surrounding spaces ignored; other columns are ignored):

* ``path`` (required): the image file, relative to the CSV's folder or absolute.
* ``label`` (required): the class name (any text; ``0``/``1`` are names too).
* ``subject`` (optional): patient/donor id; gives ``subjects`` for subject-grouped splits
  (``data.split.group_by=subject``) and a ``subject`` per sample. Every row needs one.
* ``split`` (optional): ``train``, ``val`` or ``test``, a fixed split used by
  ``data.split.protocol=fixed`` (``split_names``); the ``split`` argument keeps only the rows of
  one subset.

Every problem is one :class:`DataError` naming the CSV and the line (header = line 1): a missing
column, an empty path or label, a label outside ``classes`` (when given), a listed class without
rows, a path listed twice (after resolving ``..`` and links), a missing image, an unknown split
name. An image that does not decode fails on first load with its path. Items keep the CSV's row
order (deterministic; the split is drawn over it). Classes: by default the labels in natural
order; ``classes`` and ``positive_class`` as in
:class:`~leuk_lightning.data.datasets.folder.FolderDataset`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from leuk_lightning.data.datasets._common import ImageFolderDataset, Transform, summarize
from leuk_lightning.data.datasets.folder import order_classes
from leuk_lightning.errors import ConfigError, DataError

MANIFEST_REQUIRED = ("path", "label")
MANIFEST_OPTIONAL = ("subject", "split")
MANIFEST_SPLITS = ("train", "val", "test")


class ManifestDataset(ImageFolderDataset):
    """Images and labels listed in a CSV; labels are int64 class indices into ``classes``.

    Args:
        csv_path: the manifest.
        split: keep only the rows whose ``split`` column is this (``train``/``val``/``test``);
            ``None`` keeps every row. Classes are always taken from the whole CSV, so the
            subsets of one manifest agree.
        classes, positive_class: class order and the positive class of a two-class task.
        image_size, transforms, on_bad_image: as every dataset of this package.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike[str],
        split: str | None = None,
        classes: Sequence[str] | None = None,
        positive_class: str | None = None,
        image_size: int | None = None,
        transforms: Transform | None = None,
        on_bad_image: str = "error",
    ) -> None:
        super().__init__(image_size=image_size, transforms=transforms, on_bad_image=on_bad_image)
        if split is not None and split not in MANIFEST_SPLITS:
            raise ConfigError(
                f"manifest split={split!r} is not known; use one of {MANIFEST_SPLITS}"
            )
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise DataError(f"CSV manifest {self.csv_path} does not exist or is not a file")
        self.root = self.csv_path.parent
        where = f"CSV manifest {self.csv_path}"
        try:
            with open(self.csv_path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh)
                header = [h.strip() for h in next(reader, [])]
                rows = [(reader.line_num, r) for r in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read {where}: {exc}") from exc
        missing = [c for c in MANIFEST_REQUIRED if c not in header]
        if missing:
            raise DataError(
                f"{where} lacks column(s) {missing}; its header is {header or '(empty)'}, "
                f"expected path,label[,subject][,split]"
            )
        col = {
            name: header.index(name)
            for name in (*MANIFEST_REQUIRED, *MANIFEST_OPTIONAL)
            if name in header
        }
        rows = [(line, r) for line, r in rows if any(v.strip() for v in r)]  # blank lines
        if not rows:
            raise DataError(f"{where} has a header but no rows")

        def cell(line: int, row: list[str], name: str) -> str:
            i = col[name]
            value = row[i].strip() if i < len(row) else ""
            if not value:
                raise DataError(f"{where}, line {line}: empty '{name}'")
            return value

        records: list[tuple[int, str, str, str, str]] = []
        seen: dict[str, int] = {}
        absent: list[str] = []
        for line, row in rows:
            rel, label = cell(line, row, "path"), cell(line, row, "label")
            subject = cell(line, row, "subject") if "subject" in col else ""
            split_name = cell(line, row, "split") if "split" in col else ""
            if split_name and split_name not in MANIFEST_SPLITS:
                raise DataError(
                    f"{where}, line {line}: split {split_name!r} is not one of {MANIFEST_SPLITS}"
                )
            path = Path(rel) if Path(rel).is_absolute() else self.root / rel
            key = os.path.realpath(path)
            if key in seen:
                raise DataError(
                    f"{where}, line {line}: {rel} is already listed on line {seen[key]} "
                    "(duplicate path)"
                )
            seen[key] = line
            if not path.is_file():
                absent.append(f"line {line}: {rel}")
            records.append((line, str(path), label, subject, split_name))
        if absent:
            raise DataError(
                f"{where}: {len(absent)} listed image(s) do not exist: {summarize(absent)}"
            )
        if classes is not None:
            known = {str(c) for c in classes}
            for line, _, label, _, _ in records:
                if label not in known:
                    raise DataError(
                        f"{where}, line {line}: label {label!r} is not one of the classes "
                        f"{list(classes)} (unknown label)"
                    )
            present = {label for _, _, label, _, _ in records}
            empty = [str(c) for c in classes if str(c) not in present]
            if empty:
                raise DataError(f"{where}: class(es) {empty} have no rows (empty class)")
        self.classes = order_classes(
            [label for _, _, label, _, _ in records], classes, positive_class, where
        )
        self.split = split
        if split is not None:
            if "split" not in col:
                raise DataError(f"{where} has no 'split' column, so split={split!r} cannot be kept")
            records = [r for r in records if r[4] == split]
            if not records:
                raise DataError(f"{where}: no rows with split {split!r}")
        index = {name: i for i, name in enumerate(self.classes)}
        self.lines = [line for line, _, _, _, _ in records]
        self.paths = [p for _, p, _, _, _ in records]
        self.labels = torch.tensor([index[lab] for _, _, lab, _, _ in records], dtype=torch.int64)
        if "subject" in col:
            self.subjects: list[str] = [s for _, _, _, s, _ in records]
            self._register_extra("subject", self.subjects)
        if "split" in col:
            self.split_names: list[str] = [s for _, _, _, _, s in records]
        self._apply_bad_image_policy()

    def _after_keep(self, keep: list[int]) -> None:
        self.lines = [self.lines[i] for i in keep]
        if "subject" in self._extras:
            self.subjects = self._extras["subject"]  # type: ignore[assignment]
        if hasattr(self, "split_names"):
            self.split_names = [self.split_names[i] for i in keep]


__all__ = ["MANIFEST_SPLITS", "ManifestDataset"]
