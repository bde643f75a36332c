"""The embedded demo data: every look-alike dataset, built once under ``data_dir/demo``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

from leuk_lightning.data.synthetic.cells_voc import write_cells_voc
from leuk_lightning.data.synthetic.classification import write_adp, write_all_idb2, write_cnmc

DEMO_MARKER = ".complete.json"
DEMO_VERSION = 2

DEMO_NAMES = {
    "all_idb2": "ALL_IDB2",
    "adp": "ADP",
    "cnmc": "C-NMC_Leukemia",
    "cells_voc": "cells_voc",
}


def _demo_complete(demo: Path, size: int) -> bool:
    try:
        marker = json.loads((demo / DEMO_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == {"version": DEMO_VERSION, "size": size}


def ensure_demo_data(data_dir: str | os.PathLike[str], size: int = 64) -> dict[str, Path]:
    """Create (once) the demo datasets under ``data_dir/demo`` and return their roots.

    Keys: ``all_idb2`` (ALL_IDB2, 260 crops), ``adp`` (ADP, 20 slides x 15 patches with a
    release split), ``cnmc`` (C-NMC_Leukemia, Kaggle layout, 10 subjects x 12 cells),
    ``cells_voc`` (300 LabelImg VOC pictures of 2*size px, several cells each). The data
    is built in a temporary folder whose completion marker is written last, then renamed
    into place, so an interrupted build is redone and concurrent callers never see half a
    dataset. A demo built for another ``size`` is replaced.
    """
    data_path = Path(data_dir)
    demo = data_path / "demo"
    roots = {key: demo / name for key, name in DEMO_NAMES.items()}
    if _demo_complete(demo, size):
        return roots
    data_path.mkdir(parents=True, exist_ok=True)
    tmp = data_path / f".demo.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write_all_idb2(tmp / DEMO_NAMES["all_idb2"], n=260, size=size, seed=0)
        write_adp(
            tmp / DEMO_NAMES["adp"],
            n_slides=20,
            patches_per_slide=15,
            size=size,
            seed=1,
            with_release_split=True,
        )
        write_cnmc(
            tmp,
            layout="kaggle",
            n_subjects_all=6,
            n_subjects_hem=4,
            images_per_subject=12,
            n_prelim=30,
            n_final=20,
            size=size,
            seed=2,
        )
        write_cells_voc(tmp / DEMO_NAMES["cells_voc"], n_images=300, size=2 * size, seed=3)
        (tmp / DEMO_MARKER).write_text(json.dumps({"version": DEMO_VERSION, "size": size}))
        if demo.exists() and not _demo_complete(demo, size):
            stale = data_path / f".demo.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(OSError):  # another process may have moved it first
                os.rename(demo, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, demo)
        except OSError:
            if not _demo_complete(demo, size):  # lost a race against a different build
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return roots
