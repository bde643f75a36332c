"""ADP: Atlas of Digital Pathology V1.0 (Hosseini et al., 2019), the source domain.

On-disk layout, exactly as unpacked from the release::

    ADP/                                         <- root
      ADP_EncodedLabels_Release1_Flat.csv        label CSV (or lbl/<same name>, or label_csv=)
      img_res_1um_bicubic/                       patches (image_dir=)
        001.png_crop_1059.png                    <slide>.png_crop_<n>.png
        HE#2.png_crop_17.png
        ...
      splits/{train,valid,test}.npy              optional release split: CSV row indices

The CSV has 17,668 rows: column ``Patch Names`` then 43 hierarchical tissue classes of 0/1
(``ADP_COLUMNS``, release order). Every child label implies its parent; five columns
(N.G.A, N.G.O, N.G.E, N.G.R, N.G.T) have no positives in the release. The slide (whole-slide
image) is the part of the patch name before ``.png_crop_`` (100 slides, e.g. ``001``, ``59``,
``119_R01``, ``HE#2``, ``PP7``); its index in the sorted list of slides is the DL4ALL
self-supervised label (``label="slide"``).

Label levels (``ADP_LEVELS``) follow the HistoTNet/DL4ALL authors' code: level 1 has 9
classes, level 2 has 26 and level 3 has 38. Note: the HistoTNet paper text says 23 classes at
level 2, but the authors' code uses the 26 listed here (the ``.X`` "other" columns are never
used). ``classes=[...]`` overrides the level's list.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from leuk_lightning.data.datasets._common import (
    ImageFolderDataset,
    Transform,
    list_files,
    require_dir,
    summarize,
)
from leuk_lightning.errors import ConfigError, DataError

ADP_CSV_NAME = "ADP_EncodedLabels_Release1_Flat.csv"
ADP_NAME_COLUMN = "Patch Names"
ADP_SLIDE_SEPARATOR = ".png_crop_"
ADP_COLUMNS: list[str] = [
    "E", "E.M", "E.M.S", "E.M.C", "E.T", "E.T.S", "E.T.C", "E.T.X",
    "C", "C.D", "C.D.I", "C.D.R", "C.L", "C.X",
    "H", "H.E", "H.K", "H.Y", "H.X",
    "S", "S.M", "S.C", "S.R",
    "A", "A.W", "A.M",
    "M",
    "N", "N.P", "N.R", "N.G", "N.G.M", "N.G.A", "N.G.O", "N.G.E", "N.G.R", "N.G.T", "N.G.X",
    "G", "G.O", "G.N", "G.X",
    "T",
]  # fmt: skip
_L1 = ["E", "C", "H", "S", "A", "M", "N", "G", "T"]
_L2 = _L1 + [
    "E.M", "E.T", "C.D", "C.L", "H.E", "H.K", "H.Y", "S.M", "S.C", "S.R", "A.W", "A.M",
    "N.P", "N.R", "N.G", "G.O", "G.N",
]  # fmt: skip
_L3 = _L2 + [
    "E.M.S", "E.M.C", "E.T.S", "E.T.C", "C.D.I", "C.D.R",
    "N.G.M", "N.G.A", "N.G.O", "N.G.E", "N.G.R", "N.G.T",
]  # fmt: skip
ADP_LEVELS: dict[int, list[str]] = {1: _L1, 2: _L2, 3: _L3}
#: columns without a single positive row in the real release
ADP_EMPTY_COLUMNS = ["N.G.A", "N.G.O", "N.G.E", "N.G.R", "N.G.T"]
ADP_RELEASE_SPLITS = ("train", "valid", "test")
ADP_LABEL_KINDS = ("tissue", "slide")


def adp_slide_of(patch_name: str) -> str:
    """Slide name of a patch: the part before ``.png_crop_`` (``HE#2.png_crop_5.png`` -> HE#2)."""
    slide, sep, _ = patch_name.partition(ADP_SLIDE_SEPARATOR)
    if not sep or not slide:
        raise DataError(
            f"ADP patch name {patch_name!r} is not of the form <slide>.png_crop_<n>.png"
        )
    return slide


def resolve_adp_classes(level: int | None, classes: Sequence[str] | None) -> list[str]:
    """The class columns for a label level, or the explicit ``classes`` list (validated)."""
    if classes is not None:
        chosen = [str(c) for c in classes]
        unknown = [c for c in chosen if c not in ADP_COLUMNS]
        if unknown:
            raise ConfigError(
                f"data.classes names unknown ADP class(es) {unknown}; known: {ADP_COLUMNS}"
            )
        if not chosen:
            raise ConfigError("data.classes is empty; give at least one ADP class column")
        dup = sorted({c for c in chosen if chosen.count(c) > 1})
        if dup:
            raise ConfigError(f"data.classes lists {dup} more than once")
        return chosen
    if level not in ADP_LEVELS:
        raise ConfigError(
            f"data.label_level={level} is not a known ADP label level; use 1, 2 or 3, "
            "or give data.classes"
        )
    return list(ADP_LEVELS[level])


class AdpDataset(ImageFolderDataset):
    """ADP patches with multi-hot tissue labels (float32) or the slide index (int64).

    Samples: ``{"image", "label", "path", "slide"}``; ``slide`` is the int slide index for
    every label kind. Attributes: ``classes``, ``slides`` (sorted unique slide names of the
    whole CSV, so indices agree between release splits), ``slide_ids`` (per item),
    ``patch_names``, ``csv_path``, ``image_dir``, ``rows`` (CSV row index per item).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        level: int | None = 1,
        label: str = "tissue",
        classes: Sequence[str] | None = None,
        label_csv: str | os.PathLike[str] | None = None,
        image_dir: str = "img_res_1um_bicubic",
        image_size: int | None = None,
        transforms: Transform | None = None,
        use_release_split: bool = False,
        split: str | None = None,
        on_bad_image: str = "error",
    ) -> None:
        super().__init__(image_size=image_size, transforms=transforms, on_bad_image=on_bad_image)
        if label not in ADP_LABEL_KINDS:
            raise ConfigError(f"ADP label={label!r} is not known; use one of {ADP_LABEL_KINDS}")
        tissue_classes = resolve_adp_classes(level, classes)
        if use_release_split and split not in ADP_RELEASE_SPLITS:
            raise ConfigError(
                f"ADP split={split!r} is not a release split; use one of {ADP_RELEASE_SPLITS}"
            )
        if not use_release_split and split is not None:
            raise ConfigError(
                f"ADP split={split!r} is only read with use_release_split=true "
                "(otherwise splits are drawn by the datamodule)"
            )
        self.root = require_dir(root, "ADP folder")
        self.level = level if classes is None else None
        self.label_kind = label
        self.tissue_classes = tissue_classes
        self.csv_path = self._find_csv(label_csv)
        self.image_dir = require_dir(self.root / image_dir, "ADP image folder")

        names, matrix = self._read_csv(self.csv_path, tissue_classes)
        self._check_images(names)
        slide_names = [adp_slide_of(n) for n in names]
        self.slides: list[str] = sorted(set(slide_names))
        slide_index = {s: i for i, s in enumerate(self.slides)}
        all_slide_ids = np.array([slide_index[s] for s in slide_names], dtype=np.int64)

        rows = np.arange(len(names))
        if use_release_split:
            rows = self._read_release_split(split, len(names))
        self.rows: list[int] = rows.tolist()
        self.patch_names = [names[r] for r in self.rows]
        self.paths = [str(self.image_dir / n) for n in self.patch_names]
        self.slide_ids = torch.from_numpy(all_slide_ids[rows])
        self.tissue_labels = torch.from_numpy(matrix[rows].astype(np.float32))
        if label == "tissue":
            self.classes = list(tissue_classes)
            self.labels = self.tissue_labels
        else:
            self.classes = list(self.slides)
            self.labels = self.slide_ids
        self._register_extra("slide", self.slide_ids.tolist())
        self._apply_bad_image_policy()

    # -- construction helpers -----------------------------------------------------------------
    def _find_csv(self, label_csv: str | os.PathLike[str] | None) -> Path:
        if label_csv is not None:
            path = Path(label_csv)
            if not path.is_file():
                raise DataError(f"ADP label CSV {path} (label_csv) does not exist")
            return path
        candidates = [self.root / ADP_CSV_NAME, self.root / "lbl" / ADP_CSV_NAME]
        for path in candidates:
            if path.is_file():
                return path
        raise DataError(
            f"ADP label CSV {ADP_CSV_NAME} not found at {candidates[0]} or {candidates[1]}; "
            "give its location with label_csv"
        )

    @staticmethod
    def _read_csv(path: Path, columns: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Patch names and the 0/1 matrix of ``columns``; every problem is one DataError."""
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.reader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read ADP label CSV {path}: {exc}") from exc
        if not rows:
            raise DataError(f"ADP label CSV {path} is empty; expected a header line")
        header = [h.strip() for h in rows[0]]
        missing = [c for c in [ADP_NAME_COLUMN, *columns] if c not in header]
        if missing:
            raise DataError(f"ADP label CSV {path} lacks required column(s) {missing}")
        body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
        if not body:
            raise DataError(f"ADP label CSV {path} has a header but no rows")
        short = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
        if short:
            raise DataError(
                f"ADP label CSV {path}: line(s) {summarize([str(x) for x in short])} have a "
                f"different number of fields than the header ({len(header)})"
            )
        name_col = header.index(ADP_NAME_COLUMN)
        names = [r[name_col].strip() for r in body]
        seen: set[str] = set()
        dups = [n for n in names if n in seen or seen.add(n)]
        if dups:
            raise DataError(f"ADP label CSV {path}: patch name(s) listed twice: {summarize(dups)}")
        col_idx = [header.index(c) for c in columns]
        cells = np.array([[r[j].strip() for j in col_idx] for r in body], dtype=object)
        ok = (cells == "0") | (cells == "1")
        if not ok.all():
            r, c = np.argwhere(~ok)[0]
            raise DataError(
                f"ADP label CSV {path}: column {columns[c]!r} of patch {names[r]!r} is "
                f"{cells[r, c]!r}; expected 0 or 1 ({int((~ok).sum())} bad value(s) in all)"
            )
        return names, (cells == "1").astype(np.uint8)

    def _check_images(self, names: list[str]) -> None:
        present = set(list_files(self.image_dir))
        if not present:
            raise DataError(f"ADP image folder {self.image_dir} is empty; expected PNG patches")
        missing = [n for n in names if n not in present]
        if missing:
            raise DataError(
                f"ADP label CSV {self.csv_path}: {len(missing)} row(s) name missing images in "
                f"{self.image_dir}, first: {summarize(missing)}"
            )
        listed = set(names)
        extra = sorted(n for n in present if n not in listed)
        if extra:
            raise DataError(
                f"ADP image folder {self.image_dir}: {len(extra)} image(s) have no row in "
                f"{self.csv_path}, first: {summarize(extra)}"
            )

    def _read_release_split(self, split: str | None, n_rows: int) -> np.ndarray:
        path = self.root / "splits" / f"{split}.npy"
        if not path.is_file():
            raise DataError(
                f"ADP release split file {path} does not exist; expected "
                f"splits/{{train,valid,test}}.npy under {self.root} (or use_release_split=false)"
            )
        try:
            rows = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any numpy load failure
            raise DataError(f"cannot read ADP release split {path}: {exc}") from exc
        rows = np.asarray(rows).reshape(-1)
        if not np.issubdtype(rows.dtype, np.integer):
            raise DataError(f"ADP release split {path} holds {rows.dtype}; expected row indices")
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            raise DataError(
                f"ADP release split {path} has row indices outside 0..{n_rows - 1} "
                f"(the label CSV {self.csv_path} has {n_rows} rows)"
            )
        if len(np.unique(rows)) != len(rows):
            raise DataError(f"ADP release split {path} lists a row more than once")
        return rows.astype(np.int64)

    def _after_keep(self, keep: list[int]) -> None:
        index = torch.as_tensor(keep, dtype=torch.long)
        self.rows = [self.rows[i] for i in keep]
        self.patch_names = [self.patch_names[i] for i in keep]
        self.slide_ids = self.slide_ids[index]
        self.tissue_labels = self.tissue_labels[index]

    # -- summaries ------------------------------------------------------------------------------
    def positives_per_class(self) -> torch.Tensor:
        """Items per class: column sums of the multi-hot labels, or patches per slide (int64)."""
        if self.label_kind == "tissue":
            return self.labels.sum(dim=0).to(torch.int64)
        return torch.bincount(self.labels, minlength=len(self.classes))
