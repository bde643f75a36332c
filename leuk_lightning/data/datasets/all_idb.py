"""ALL-IDB2: 260 single-cell crops of peripheral blood smears (Labati et al., 2011).

On-disk layout, exactly as unpacked from the official download::

    ALL_IDB2/                  <- root (or give root=ALL_IDB2/img directly)
      img/
        Im001_1.tif            ImNNN_L.tif: NNN = image number, L = label
        ...                    (1 = lymphoblast, 0 = normal), 260 files
        Im260_0.tif

Images are about 257x257 RGB, a few are smaller (cells at the border of the original
smear): pass ``image_size`` to resize every image to a common square size. Extensions
``.tif``/``.tiff`` are accepted in any case; hidden files and ``Thumbs.db`` are ignored, any
other file name is an error (so a stray file never silently changes the class balance).
"""

from __future__ import annotations

import os
import re

import torch

from leuk_lightning.data.datasets._common import (
    ImageFolderDataset,
    Transform,
    list_files,
    require_all_classes,
    require_dir,
    summarize,
)
from leuk_lightning.errors import DataError

ALL_IDB2_CLASSES = ["normal", "lymphoblast"]
ALL_IDB2_PATTERN = re.compile(r"^Im(\d+)_([01])\.tiff?$", re.IGNORECASE)


class AllIdb2Dataset(ImageFolderDataset):
    """ALL-IDB2 single-cell crops; label 1 = lymphoblast, 0 = normal (int64 scalar)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        image_size: int | None = None,
        transforms: Transform | None = None,
        on_bad_image: str = "error",
        allow_missing_classes: bool = False,
    ) -> None:
        super().__init__(image_size=image_size, transforms=transforms, on_bad_image=on_bad_image)
        root_path = require_dir(root, "ALL-IDB2 folder")
        folder = root_path / "img" if (root_path / "img").is_dir() else root_path
        self.root = root_path
        self.image_dir = folder
        names = list_files(folder)
        if not names:
            raise DataError(
                f"ALL-IDB2 folder {folder} has no files; expected ImNNN_L.tif images "
                "(L = 1 lymphoblast, 0 normal) directly in it or in its img/ subfolder"
            )
        bad = [n for n in names if not ALL_IDB2_PATTERN.match(n)]
        if bad:
            raise DataError(
                f"ALL-IDB2 folder {folder}: file name(s) not of the form ImNNN_L.tif "
                f"(L = 0 or 1): {summarize(bad)}"
            )
        parsed = sorted(
            (int(m.group(1)), n, int(m.group(2))) for n in names if (m := ALL_IDB2_PATTERN.match(n))
        )
        self.classes = list(ALL_IDB2_CLASSES)
        self.paths = [str(folder / n) for _, n, _ in parsed]
        self.labels = torch.tensor([lab for _, _, lab in parsed], dtype=torch.int64)
        require_all_classes(
            self.labels.tolist(),
            self.classes,
            f"ALL-IDB2 folder {folder}",
            allow_missing_classes,
            lambda c: f"no ImNNN_{self.classes.index(c)}.tif files",
        )
        self._apply_bad_image_policy()
