"""C-NMC 2019: segmented lymphocytes, ALL (cancer) vs HEM (normal), ISBI 2019 challenge.

Two on-disk layouts are read unchanged; ``root`` may be any folder above the data (the
folder holding ``C-NMC_Leukemia/``, the mirror root itself, or the official root) because
the loader walks the tree to find the ``all``/``hem`` folders instead of assuming depths.

Kaggle mirror (``C-NMC_Leukemia/``)::

    training_data/fold_{0,1,2}/{all,hem}/UID_<subject>_<image>_<cell>_{all,hem}.bmp   10,661
    validation_data/C-NMC_test_prelim_phase_data/<n>.bmp                              1,867
    validation_data/C-NMC_test_prelim_phase_data_labels.csv
    testing_data/C-NMC_test_final_phase_data/<n>.bmp                        2,586 (no labels)

Official archive::

    C-NMC_training_data/fold_{0,1,2}/{all,hem}/*.bmp
    C-NMC_test_prelim_phase_data/<n>.bmp + C-NMC_test_prelim_phase_data_labels.csv (inside)
    C-NMC_test_final_phase_data/<n>.bmp

Some mirrors nest folds twice (``fold_0/fold_0/all``); the fold of an image is its nearest
``fold_<k>`` ancestor (-1 when there is none). Training file names are
``UID_<subject>_<image>_<cell>_<all|hem>.bmp``; normal donors' subjects start with ``H``
(one is ``h3`` in the release, so case is compared loosely). The label comes from the folder
(all = 1, hem = 0) and must agree with the name's suffix. The prelim label CSV has the
header ``Patient_ID,new_names,labels``: ``Patient_ID`` is the original training-style name
(gives the subject), ``new_names`` the numbered file, ``labels`` 1 = ALL, 0 = HEM.
Images are 450x450 RGB BMP, one cell on a black background.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from leuk_lightning.data.datasets._common import (
    ImageFolderDataset,
    Transform,
    list_files,
    natural_key,
    require_all_classes,
    require_dir,
    summarize,
)
from leuk_lightning.errors import ConfigError, DataError

CNMC_CLASSES = ["hem", "all"]
CNMC_SPLITS = ("train", "prelim_test", "final_test")
CNMC_PRELIM_DIR = "C-NMC_test_prelim_phase_data"
CNMC_FINAL_DIR = "C-NMC_test_final_phase_data"
CNMC_PRELIM_CSV = "C-NMC_test_prelim_phase_data_labels.csv"
CNMC_CSV_COLUMNS = ("Patient_ID", "new_names", "labels")
CNMC_NAME_PATTERN = re.compile(r"^UID_([^_]+)_(\d+)_(\d+)_(all|hem)\.bmp$", re.IGNORECASE)
CNMC_NUMBERED_PATTERN = re.compile(r"^(\d+)\.bmp$", re.IGNORECASE)
_FOLD_PATTERN = re.compile(r"^fold_(\d+)$", re.IGNORECASE)
_LABEL_OF = {"hem": 0, "all": 1}


def parse_cnmc_name(name: str) -> tuple[str, int, int, int]:
    """Parse ``UID_<subject>_<image>_<cell>_<all|hem>.bmp`` (a bare name or a path).

    Returns ``(subject, image, cell, label)`` with label 1 = ALL, 0 = HEM; raises DataError.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    m = CNMC_NAME_PATTERN.match(base)
    if m is None:
        raise DataError(
            f"C-NMC file name {name!r} is not of the form "
            "UID_<subject>_<image>_<cell>_<all|hem>.bmp"
        )
    return m.group(1), int(m.group(2)), int(m.group(3)), _LABEL_OF[m.group(4).lower()]


def is_normal_subject(subject: str) -> bool:
    """Normal (healthy) donors' subject ids start with ``H`` (case-insensitive)."""
    return subject[:1].upper() == "H"


def _fold_of(folder: Path) -> int:
    """Number of the nearest ``fold_<k>`` ancestor of ``folder`` (-1 when there is none)."""
    for part in reversed(folder.parts):
        m = _FOLD_PATTERN.match(part)
        if m:
            return int(m.group(1))
    return -1


class CnmcDataset(ImageFolderDataset):
    """C-NMC 2019 cells; ``split`` is ``train``, ``prelim_test`` or ``final_test``.

    Labels are int64 scalars (1 = ALL, 0 = HEM, -1 = unlabelled final test). Per-item
    attributes: ``subjects`` (str, "" when unknown) and ``folds`` (int, -1 outside the
    training folds); samples carry ``subject`` and ``fold`` too.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        image_size: int | None = None,
        transforms: Transform | None = None,
        on_bad_image: str = "error",
        folds: Sequence[int] | None = None,
        allow_missing_classes: bool = False,
    ) -> None:
        super().__init__(image_size=image_size, transforms=transforms, on_bad_image=on_bad_image)
        if split not in CNMC_SPLITS:
            raise ConfigError(f"C-NMC split={split!r} is not known; use one of {CNMC_SPLITS}")
        if folds is not None and split != "train":
            raise ConfigError(f"C-NMC folds={list(folds)} only apply to split='train'")
        self.root = require_dir(root, "C-NMC folder")
        self.split = split
        self.classes = list(CNMC_CLASSES)
        class_dirs, prelim_dirs, final_dirs, csv_files = self._walk()
        if split == "train":
            items = self._read_train(class_dirs, folds)
            where = f"C-NMC training data under {self.root}" + (
                f" (folds {list(folds)})" if folds is not None else ""
            )
            found = sorted({str(d.relative_to(self.root)) for d in class_dirs})
            require_all_classes(
                [lab for _, lab, _, _ in items],
                CNMC_CLASSES,
                where,
                allow_missing_classes,
                lambda c: f"no images in a fold_<k>/{c}/ folder; class folders found: {found}",
            )
        elif split == "prelim_test":
            items = self._read_prelim(prelim_dirs, csv_files)
        else:
            items = self._read_final(final_dirs)
        self.paths = [p for p, _, _, _ in items]
        self.labels = torch.tensor([lab for _, lab, _, _ in items], dtype=torch.int64)
        self.subjects: list[str] = [s for _, _, s, _ in items]
        self.folds: list[int] = [f for _, _, _, f in items]
        self._register_extra("subject", self.subjects)
        self._register_extra("fold", self.folds)
        self._apply_bad_image_policy()

    def _after_keep(self, keep: list[int]) -> None:
        self.subjects = self._extras["subject"]  # type: ignore[assignment]
        self.folds = self._extras["fold"]  # type: ignore[assignment]

    # -- discovery ------------------------------------------------------------------------------
    def _walk(self) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
        """One walk of the tree: all/hem folders, prelim/final folders, prelim label CSVs."""
        class_dirs: list[Path] = []
        prelim: list[Path] = []
        final: list[Path] = []
        csvs: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            here = Path(dirpath)
            name = here.name.lower()
            if here != self.root and name in _LABEL_OF:
                class_dirs.append(here)
            elif name == CNMC_PRELIM_DIR.lower():
                prelim.append(here)
            elif name == CNMC_FINAL_DIR.lower():
                final.append(here)
            csvs += [here / f for f in filenames if f.lower() == CNMC_PRELIM_CSV.lower()]
        return class_dirs, prelim, final, csvs

    def _single(self, found: list[Path], what: str) -> Path:
        if not found:
            raise DataError(f"no {what} folder found under {self.root}")
        if len(found) > 1:
            raise DataError(
                f"{len(found)} {what} folders found under {self.root} "
                f"({summarize([str(p) for p in found])}); point root at one copy"
            )
        return found[0]

    # -- splits -------------------------------------------------------------------------------
    def _read_train(
        self, class_dirs: list[Path], folds: Sequence[int] | None
    ) -> list[tuple[str, int, str, int]]:
        if not class_dirs:
            raise DataError(
                f"no C-NMC training folders (fold_<k>/all, fold_<k>/hem) found under {self.root}"
            )
        wanted = None if folds is None else {int(f) for f in folds}
        items: list[tuple[str, int, str, int]] = []
        seen: dict[str, Path] = {}
        for folder in class_dirs:
            folder_label = _LABEL_OF[folder.name.lower()]
            fold = _fold_of(folder)
            if wanted is not None and fold not in wanted:
                continue
            for name in list_files(folder):
                path = folder / name
                subject, _, _, label = parse_cnmc_name(str(path))
                if label != folder_label:
                    raise DataError(
                        f"C-NMC file {path} is named '_{CNMC_CLASSES[label]}' but lies in the "
                        f"'{folder.name}' folder; the folder and the name suffix must agree"
                    )
                if name in seen:
                    raise DataError(
                        f"C-NMC image {name} found twice ({seen[name]} and {path}); "
                        f"point root at one copy of the dataset"
                    )
                seen[name] = path
                items.append((str(path), label, subject, fold))
        if not items:
            where = f"folds {list(folds)}" if folds is not None else "the all/hem folders"
            raise DataError(f"no C-NMC training images found in {where} under {self.root}")
        items.sort(key=lambda it: (it[3], natural_key(Path(it[0]).name)))
        return items

    def _numbered_files(self, folder: Path) -> dict[str, Path]:
        names = list_files(folder)
        images = [n for n in names if not n.lower().endswith(".csv")]
        if not images:
            raise DataError(f"C-NMC test folder {folder} has no images")
        bad = [n for n in images if not CNMC_NUMBERED_PATTERN.match(n)]
        if bad:
            raise DataError(
                f"C-NMC test folder {folder}: file name(s) not of the form <n>.bmp: "
                f"{summarize(bad)}"
            )
        return {n.lower(): folder / n for n in images}

    def _read_prelim(
        self, prelim_dirs: list[Path], csv_files: list[Path]
    ) -> list[tuple[str, int, str, int]]:
        folder = self._single(prelim_dirs, CNMC_PRELIM_DIR)
        beside = [folder / CNMC_PRELIM_CSV, folder.parent / CNMC_PRELIM_CSV]  # official, Kaggle
        near = [p for p in csv_files if p.parent in (folder, folder.parent)]
        near += [p for p in beside if p.is_file() and p not in near]
        if not near:
            raise DataError(
                f"C-NMC prelim label CSV {CNMC_PRELIM_CSV} not found in {folder} or beside it "
                f"in {folder.parent}"
            )
        csv_path = near[0]
        files = self._numbered_files(folder)
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                header = [h.strip() for h in (reader.fieldnames or [])]
                rows = [
                    {(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader
                ]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read C-NMC label CSV {csv_path}: {exc}") from exc
        missing_cols = [c for c in CNMC_CSV_COLUMNS if c not in header]
        if missing_cols:
            raise DataError(
                f"C-NMC label CSV {csv_path} lacks column(s) {missing_cols}; "
                f"expected header {','.join(CNMC_CSV_COLUMNS)}"
            )
        items: list[tuple[str, int, str, int]] = []
        missing_files: list[str] = []
        listed: set[str] = set()
        for row in rows:
            new_name, label_text = row["new_names"], row["labels"]
            if label_text not in ("0", "1"):
                raise DataError(
                    f"C-NMC label CSV {csv_path}: label of {new_name!r} is {label_text!r}; "
                    "expected 1 (ALL) or 0 (HEM)"
                )
            try:
                subject, _, _, name_label = parse_cnmc_name(row["Patient_ID"])
            except DataError as exc:
                raise DataError(f"C-NMC label CSV {csv_path}: {exc}") from None
            label = int(label_text)
            if name_label != label:
                raise DataError(
                    f"C-NMC label CSV {csv_path}: row {new_name!r} has label {label} but its "
                    f"Patient_ID {row['Patient_ID']!r} says {CNMC_CLASSES[name_label]}"
                )
            key = new_name.lower()
            if key in listed:
                raise DataError(f"C-NMC label CSV {csv_path} lists {new_name!r} twice")
            listed.add(key)
            if key not in files:
                missing_files.append(new_name)
                continue
            items.append((str(files[key]), label, subject, -1))
        if missing_files:
            raise DataError(
                f"C-NMC label CSV {csv_path}: {len(missing_files)} row(s) name missing images "
                f"in {folder}, first: {summarize(missing_files)}"
            )
        unlabelled = sorted((files[k].name for k in files if k not in listed), key=natural_key)
        if unlabelled:
            raise DataError(
                f"C-NMC prelim folder {folder}: {len(unlabelled)} image(s) have no row in "
                f"{csv_path}, first: {summarize(unlabelled)}"
            )
        items.sort(key=lambda it: natural_key(Path(it[0]).name))
        return items

    def _read_final(self, final_dirs: list[Path]) -> list[tuple[str, int, str, int]]:
        folder = self._single(final_dirs, CNMC_FINAL_DIR)
        files = self._numbered_files(folder)
        names = sorted(files, key=natural_key)
        return [(str(files[n]), -1, "", -1) for n in names]


__all__ = ["CnmcDataset", "parse_cnmc_name", "is_normal_subject", "CNMC_CLASSES"]
