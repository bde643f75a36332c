"""Synthetic look-alikes of ALL-IDB2, ADP and C-NMC 2019 in the EXACT real on-disk layouts.

They are the embedded demo data and every test fixture: the real loaders read them
unchanged, so a demo run exercises the same code as a run on the real downloads. Images are
small (64 px by default), generation is deterministic for a ``seed`` (same bytes on disk),
and the classes are *learnable*: a small CNN separates the cell classes within a few epochs
and every ADP class paints its own pattern, so multi-label heads have something to learn.

* ALL-IDB2: a pinkish smear with red cells around one centred white cell. Lymphoblast (1):
  large round nucleus (high nucleus/cytoplasm ratio), light purple, fine texture and light
  nucleoli. Normal (0): smaller cell, dense dark-purple, lobed/irregular nucleus.
* ADP: the patch is a 2x2 grid of regions, each painted by one active level-1 class: the
  level-1 class sets the base colour, its level-2 child adds stripes at a child-specific
  angle, a level-3 grandchild adds dots of a grandchild-specific colour; slides add a tint.
* C-NMC: one cell (same two phenotypes: ALL like the lymphoblast, HEM like the normal cell)
  on a black background, as in the real segmented crops.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from leuk_lightning.data.datasets.adp import ADP_COLUMNS, ADP_CSV_NAME
from leuk_lightning.data.datasets.cnmc import CNMC_FINAL_DIR, CNMC_PRELIM_CSV, CNMC_PRELIM_DIR
from leuk_lightning.data.synthetic.render import (
    _grid,
    _jitter,
    _paint,
    _shape_mask,
    _smooth_noise,
    _streams,
    _to_uint8,
    render_blood_cell,
)
from leuk_lightning.errors import ConfigError

#: slide names in the style of the real ADP release (sorted order differs from this order)
ADP_SLIDE_NAMES = [
    "001", "59", "119_R01", "HE#2", "PP7", "BC38_R02", "P11_R03", "133_R01", "PP2_S08_R01",
    "BY73", "002", "123_R02", "P2", "BC1", "148_R05", "069", "PP27", "P36", "165_R01",
    "BY63_R01", "004", "135_R03", "P13_R04", "BC10_R01", "171",
]  # fmt: skip


# ------------------------------------------------------------------------------------------
# ALL-IDB2


def write_all_idb2(
    root: str | os.PathLike[str], n: int = 260, size: int = 64, seed: int = 0, subdir: str = "img"
) -> Path:
    """Write ``n`` ALL-IDB2-style crops ``ImNNN_L.tif`` into ``root/subdir``; returns ``root``.

    Labels are a seeded ~50/50 shuffle; about one image in fifteen is a few pixels smaller in
    one dimension, like the real crops cut at the smear border.
    """
    if n < 1 or size < 8:
        raise ConfigError(f"write_all_idb2 needs n >= 1 and size >= 8 (got n={n}, size={size})")
    rng, pix = _streams(seed)
    root_path = Path(root)
    folder = root_path / subdir if subdir else root_path
    folder.mkdir(parents=True, exist_ok=True)
    labels = rng.permutation(np.arange(n) % 2)
    width = max(3, len(str(n)))
    for i, label in enumerate(labels, start=1):
        h = w = size
        if rng.random() < 1 / 15:
            shrink = max(1, size // 16) + int(rng.integers(0, max(1, size // 16)))
            if rng.random() < 0.5:
                h -= shrink
            else:
                w -= shrink
        img = render_blood_cell(pix, bool(label), h, w, black_background=False)
        img.save(folder / f"Im{i:0{width}d}_{int(label)}.tif", format="TIFF")
    return root_path


# ------------------------------------------------------------------------------------------
# ADP

_L1_COLOURS = {
    "E": (226, 120, 176), "C": (244, 196, 206), "H": (122, 62, 156), "S": (214, 92, 72),
    "A": (246, 244, 236), "M": (196, 146, 120), "N": (84, 96, 190), "G": (232, 204, 110),
    "T": (110, 176, 168),
}  # fmt: skip
_DOT_COLOURS = [(10, 10, 10), (255, 255, 255), (255, 240, 0), (0, 230, 240), (0, 170, 0),
                (20, 40, 230), (255, 140, 0), (150, 0, 0)]  # fmt: skip


def _adp_children() -> dict[str, list[str]]:
    """Direct children of every ADP column (``E`` -> ``E.M``, ``E.T``)."""
    children: dict[str, list[str]] = {c: [] for c in ADP_COLUMNS}
    for col in ADP_COLUMNS:
        if "." in col:
            children[col.rsplit(".", 1)[0]].append(col)
    return children


def _adp_label_rows(
    rng: np.random.Generator, n: int, empty: set[str]
) -> list[list[tuple[str, str | None, str | None]]]:
    """Per patch: 1-3 (level-1, level-2 or None, level-3 or None) picks.

    Each pick is a column drawn uniformly from all non-empty columns (so deep classes get
    positives as often as shallow ones); its ancestors are implied.
    """
    allowed = [c for c in ADP_COLUMNS if not any(c == e or c.startswith(e + ".") for e in empty)]
    rows = []
    for _ in range(n):
        k = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        picks = []
        for col in rng.choice(allowed, size=min(k, len(allowed)), replace=False):
            parts = str(col).split(".")
            child = ".".join(parts[:2]) if len(parts) > 1 else None
            grand = str(col) if len(parts) > 2 else None
            picks.append((parts[0], child, grand))
        rows.append(picks)
    return rows


def _render_adp_patch(
    rng: np.random.Generator,
    picks: list[tuple[str, str | None, str | None]],
    size: int,
    tint: np.ndarray,
) -> Image.Image:
    children = _adp_children()
    canvas = np.empty((size, size, 3), np.float32)
    half = size // 2
    quads = [(0, 0), (0, half), (half, 0), (half, half)]
    order = rng.permutation(4)
    owners = list(range(len(picks))) + list(rng.integers(0, len(picks), 4 - len(picks)))
    period = max(3.0, 6.0 * size / 64)
    for q, owner in zip(order, owners):
        y0, x0 = quads[q]
        h, w = size - half if y0 else half, size - half if x0 else half
        top, child, grand = picks[owner]
        region = np.empty((h, w, 3), np.float32)
        region[:] = _jitter(rng, _L1_COLOURS[top], 10)
        region += (_smooth_noise(rng, h, w, max(2.0, size / 12)) * 8)[..., None]
        yy, xx = _grid(h, w)
        if child is not None:
            k = children[top].index(child)
            theta = np.pi * k / max(4, len(children[top])) + rng.normal(0, 0.05)
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
            region *= (1.0 - 0.45 * (wave > 0.2))[..., None]
        if grand is not None:
            colour = _DOT_COLOURS[children[child].index(grand) % len(_DOT_COLOURS)]
            n_dots = int(rng.integers(4, 8))
            for _ in range(n_dots):
                m = _shape_mask(yy, xx, rng.uniform(1, h - 1), rng.uniform(1, w - 1), size / 40 + 1)
                _paint(region, m, colour)
        canvas[y0 : y0 + h, x0 : x0 + w] = region
    canvas += tint
    canvas += rng.normal(0, 2.0, canvas.shape).astype(np.float32)
    return _to_uint8(canvas)


def write_adp(
    root: str | os.PathLike[str],
    n_slides: int = 10,
    patches_per_slide: int = 20,
    size: int = 64,
    seed: int = 0,
    with_release_split: bool = False,
    empty_columns: Sequence[str] = (),
) -> Path:
    """Write an ADP-style release: label CSV (real header) + ``img_res_1um_bicubic/`` patches.

    Labels respect the hierarchy (a child implies its parent; every row has a label).
    ``empty_columns`` are never set (pass ``ADP_EMPTY_COLUMNS`` to mimic the release's five
    empty classes). ``with_release_split`` adds ``splits/{train,valid,test}.npy`` (70/15/15).
    Returns ``root``.
    """
    if n_slides < 1 or patches_per_slide < 1 or size < 8:
        raise ConfigError("write_adp needs n_slides >= 1, patches_per_slide >= 1, size >= 8")
    unknown = [c for c in empty_columns if c not in ADP_COLUMNS]
    if unknown:
        raise ConfigError(f"empty_columns names unknown ADP columns {unknown}")
    rng, pix = _streams(seed)
    root_path = Path(root)
    img_dir = root_path / "img_res_1um_bicubic"
    img_dir.mkdir(parents=True, exist_ok=True)
    slides = list(ADP_SLIDE_NAMES[:n_slides])
    slides += [f"{200 + i:03d}" for i in range(n_slides - len(slides))]
    col_index = {c: i for i, c in enumerate(ADP_COLUMNS)}
    records: list[tuple[str, np.ndarray]] = []
    for slide in slides:
        tint = rng.uniform(-14, 14, 3).astype(np.float32)
        crops = np.sort(rng.choice(np.arange(1, 4000), size=patches_per_slide, replace=False))
        label_rows = _adp_label_rows(rng, patches_per_slide, set(empty_columns))
        for crop, picks in zip(crops, label_rows):
            name = f"{slide}.png_crop_{int(crop)}.png"
            vec = np.zeros(len(ADP_COLUMNS), np.uint8)
            for pick in picks:
                for col in pick:
                    if col is not None:
                        vec[col_index[col]] = 1
            _render_adp_patch(pix, picks, size, tint).save(img_dir / name, format="PNG")
            records.append((name, vec))
    records.sort(key=lambda r: r[0])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Patch Names", *ADP_COLUMNS])
    for name, vec in records:
        writer.writerow([name, *vec.tolist()])
    (root_path / ADP_CSV_NAME).write_text(buf.getvalue(), encoding="utf-8")
    if with_release_split:
        perm = rng.permutation(len(records))
        n_train, n_valid = int(round(0.7 * len(perm))), int(round(0.15 * len(perm)))
        parts = {
            "train": perm[:n_train],
            "valid": perm[n_train : n_train + n_valid],
            "test": perm[n_train + n_valid :],
        }
        (root_path / "splits").mkdir(exist_ok=True)
        for key, rows in parts.items():
            np.save(root_path / "splits" / f"{key}.npy", np.sort(rows).astype(np.int64))
    return root_path


# ------------------------------------------------------------------------------------------
# C-NMC 2019


def write_cnmc(
    root: str | os.PathLike[str],
    layout: str = "kaggle",
    n_subjects_all: int = 6,
    n_subjects_hem: int = 4,
    images_per_subject: int = 8,
    n_prelim: int = 20,
    n_final: int = 10,
    size: int = 64,
    seed: int = 0,
    nested_folds: bool = False,
) -> Path:
    """Write a C-NMC-2019-style dataset; returns the root to give ``CnmcDataset``.

    ``layout="kaggle"`` writes ``root/C-NMC_Leukemia/{training_data,validation_data,
    testing_data}`` and returns ``root/C-NMC_Leukemia``; ``layout="official"`` writes
    ``root/C-NMC_training_data`` etc. (label CSV inside the prelim folder) and returns ``root``.
    Subjects are spread over folds 0-2 (one fold each); hem subjects are ``H<k>`` (the third
    is ``h3``, lower case, as in the release). Prelim subjects are new ones.
    """
    if layout not in ("kaggle", "official"):
        raise ConfigError(f"write_cnmc layout={layout!r} is not known; use 'kaggle' or 'official'")
    if n_subjects_all < 1 or n_subjects_hem < 1 or images_per_subject < 1 or size < 8:
        raise ConfigError("write_cnmc needs at least one subject of each class, one image each")
    rng, pix = _streams(seed)
    root_path = Path(root)
    if layout == "kaggle":
        base = root_path / "C-NMC_Leukemia"
        train_dir = base / "training_data"
        prelim_dir = base / "validation_data" / CNMC_PRELIM_DIR
        csv_path = base / "validation_data" / CNMC_PRELIM_CSV
        final_dir = base / "testing_data" / CNMC_FINAL_DIR
    else:
        base = root_path
        train_dir = base / "C-NMC_training_data"
        prelim_dir = base / CNMC_PRELIM_DIR
        csv_path = prelim_dir / CNMC_PRELIM_CSV
        final_dir = base / CNMC_FINAL_DIR
    ids = rng.choice(np.arange(1, 100), size=n_subjects_all + 8, replace=False)
    all_subjects = [str(x) for x in ids[:n_subjects_all]]
    hem_subjects = [f"{'h' if k == 3 else 'H'}{k}" for k in range(1, n_subjects_hem + 1)]

    def cell_name(subject: str, j: int, label: int) -> str:
        return f"UID_{subject}_{j // 2 + 1}_{j % 2 + 1}_{'all' if label else 'hem'}.bmp"

    for label, subjects in ((1, all_subjects), (0, hem_subjects)):
        order = rng.permutation(len(subjects))
        for rank, idx in enumerate(order):
            subject = subjects[idx]
            fold = f"fold_{rank % 3}"
            folder = train_dir / fold / fold if nested_folds else train_dir / fold
            folder = folder / ("all" if label else "hem")
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(images_per_subject):
                img = render_blood_cell(pix, bool(label), size, size, black_background=True)
                img.save(folder / cell_name(subject, j, label), format="BMP")

    prelim_all = [str(x) for x in ids[n_subjects_all : n_subjects_all + 2]]
    prelim_hem = [f"H{n_subjects_hem + 1 + k}" for k in range(2)]
    prelim_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    next_cell = dict.fromkeys(prelim_all + prelim_hem, 0)
    for i in range(1, n_prelim + 1):
        label = int(rng.random() < 0.65)
        subject = str(rng.choice(prelim_all if label else prelim_hem))
        next_cell[subject] += int(rng.integers(1, 4))  # unique, increasing image/cell numbers
        patient_id = cell_name(subject, next_cell[subject], label)
        render_blood_cell(pix, bool(label), size, size, True).save(
            prelim_dir / f"{i}.bmp", format="BMP"
        )
        rows.append((patient_id, f"{i}.bmp", label))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Patient_ID", "new_names", "labels"])
    writer.writerows(rows)
    csv_path.write_text(buf.getvalue(), encoding="utf-8")

    final_dir.mkdir(parents=True, exist_ok=True)
    for i in range(1, n_final + 1):
        label = bool(rng.random() < 0.65)
        render_blood_cell(pix, label, size, size, True).save(final_dir / f"{i}.bmp", format="BMP")
    return base
