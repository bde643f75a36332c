"""The embedded demo data: every look-alike dataset, built once under ``data_dir/demo``.

Its realism is set by ``demo_variation`` in ``conf/debug/demo.yaml`` (passed here as
``variation``): ``all_idb2`` and ``cnmc`` override fields of
:class:`~leuk_lightning.data.synthetic.render.CellVariation` (defaults
:data:`~leuk_lightning.data.synthetic.classification.ALL_IDB2_VARIATION` and
:data:`~leuk_lightning.data.synthetic.classification.CNMC_VARIATION`), ``adp`` the keyword
arguments of :func:`write_adp` that set its look (``stain``). Other knobs, other data: the
completion marker records them and a demo built with different ones is rebuilt.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from leuk_lightning.data.synthetic.cells_voc import write_cells_voc
from leuk_lightning.data.synthetic.classification import write_adp, write_all_idb2, write_cnmc

DEMO_MARKER = ".complete.json"
DEMO_VERSION = 3

DEMO_NAMES = {
    "all_idb2": "ALL_IDB2",
    "adp": "ADP",
    "cnmc": "C-NMC_Leukemia",
    "cells_voc": "cells_voc",
}


def _plain_variation(variation: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """The effective knobs (defaults overridden by ``variation``; a Hydra DictConfig works
    too) as plain JSON-able dicts, so equal data always has an equal marker."""
    from dataclasses import asdict

    from leuk_lightning.data.synthetic.classification import ALL_IDB2_VARIATION, CNMC_VARIATION
    from leuk_lightning.errors import ConfigError

    plain: dict[str, dict[str, float]] = {
        "all_idb2": asdict(ALL_IDB2_VARIATION),
        "cnmc": asdict(CNMC_VARIATION),
        "adp": {"stain": float(inspect.signature(write_adp).parameters["stain"].default)},
    }
    for key, knobs in (variation or {}).items():
        if key not in plain:
            raise ConfigError(f"demo_variation.{key} is not a demo dataset; use {sorted(plain)}")
        unknown = set(knobs or {}) - set(plain[key])
        if unknown:
            raise ConfigError(
                f"demo_variation.{key} has unknown knobs {sorted(unknown)}; "
                f"use {sorted(plain[key])}"
            )
        plain[str(key)].update({str(k): float(v) for k, v in (knobs or {}).items()})
    return plain


def _demo_complete(demo: Path, size: int, variation: dict[str, dict[str, float]]) -> bool:
    try:
        marker = json.loads((demo / DEMO_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == {"version": DEMO_VERSION, "size": size, "variation": variation}


def ensure_demo_data(
    data_dir: str | os.PathLike[str],
    size: int = 64,
    variation: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Create (once) the demo datasets under ``data_dir/demo`` and return their roots.

    Keys: ``all_idb2`` (ALL_IDB2, 260 crops), ``adp`` (ADP, 20 slides x 15 patches with a
    release split), ``cnmc`` (C-NMC_Leukemia, Kaggle layout, 10 subjects x 12 cells),
    ``cells_voc`` (300 LabelImg VOC pictures of 2*size px, several cells each). The data
    is built in a temporary folder whose completion marker is written last, then renamed
    into place, so an interrupted build is redone and concurrent callers never see half a
    dataset. A demo built for another ``size`` or ``variation`` (see the module docstring) is
    replaced.
    """
    var = _plain_variation(variation)
    data_path = Path(data_dir)
    demo = data_path / "demo"
    roots = {key: demo / name for key, name in DEMO_NAMES.items()}
    if _demo_complete(demo, size, var):
        return roots
    data_path.mkdir(parents=True, exist_ok=True)
    tmp = data_path / f".demo.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write_all_idb2(
            tmp / DEMO_NAMES["all_idb2"], n=260, size=size, seed=0, variation=var["all_idb2"]
        )
        write_adp(
            tmp / DEMO_NAMES["adp"],
            n_slides=20,
            patches_per_slide=15,
            size=size,
            seed=1,
            with_release_split=True,
            **var["adp"],
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
            variation=var["cnmc"],
        )
        write_cells_voc(tmp / DEMO_NAMES["cells_voc"], n_images=300, size=2 * size, seed=3)
        (tmp / DEMO_MARKER).write_text(
            json.dumps({"version": DEMO_VERSION, "size": size, "variation": var})
        )
        if demo.exists() and not _demo_complete(demo, size, var):
            stale = data_path / f".demo.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(OSError):  # another process may have moved it first
                os.rename(demo, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, demo)
        except OSError:
            if not _demo_complete(demo, size, var):  # lost a race against a different build
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return roots
