"""Synthetic look-alikes of ALL-IDB2, ADP and C-NMC 2019 in the EXACT real on-disk layouts.

They are the embedded demo data and every test fixture: the real loaders read them
unchanged, so a demo run exercises the same code as a run on the real downloads. Images are
small (64 px by default) and generation is deterministic for a ``seed`` (same bytes on disk).
The classes are learnable but, like the real data, not perfectly: the default
:class:`~leuk_lightning.data.synthetic.render.CellVariation` of each dataset
(:data:`ALL_IDB2_VARIATION`, :data:`CNMC_VARIATION`) gives overlapping morphology, per-subject /
per-acquisition stain, size and phenotype shifts, illumination, focus blur, debris and a small
label-noise rate; pass ``variation=CellVariation()`` (all zeros) for clean prototypes.

* ALL-IDB2: a pinkish smear with red cells around one centred white cell. Lymphoblast (1):
  large round nucleus (high nucleus/cytoplasm ratio), light purple, fine texture and light
  nucleoli. Normal (0): smaller cell, dense dark-purple, lobed/irregular nucleus. Crops come
  from hidden acquisitions sharing stain and magnification, and may show platelets and a
  neighbouring cell cut by the border.
* ADP: the patch is a 2x2 grid of regions, each painted by one active level-1 class: the
  level-1 class sets the base colour, its level-2 child scatters nuclei of a child-specific
  phenotype (the blood cells' chromatin textures: dark clumped or light fine, round or
  elongated at a child-specific angle), a level-3 grandchild adds dots of its own colour;
  slides add an H&E-like stain shift and a tint. The nuclei are the low-level structure that
  ADP pre-training can transfer to the blood cells, as in HistoTNet.
* C-NMC: one cell (same two phenotypes: ALL like the lymphoblast, HEM like the normal cell)
  on a black background, as in the real segmented crops; every subject's cells share a stain
  residue, size scale and phenotype shift (subject effects), some have segmentation errors.
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
    CLASS_CENTRES,
    CellVariation,
    _draw_nucleus,
    _grid,
    _jitter,
    _paint,
    _shape_mask,
    _smooth_noise,
    _streams,
    _to_uint8,
    apply_stain,
    draw_stain,
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


#: demo defaults of ALL-IDB2: smears from several acquisitions (patients, magnifications 300-500x,
#: one camera), so stain, illumination, focus and cell size vary between groups of crops
ALL_IDB2_VARIATION = CellVariation(
    overlap=0.15,
    subject_spread=0.05,
    stain=0.12,
    illumination=0.1,
    blur=0.8,
    debris=0.5,
    label_noise=0.03,
)
#: demo defaults of C-NMC: stain-normalised segmented crops, but strong subject effects (each
#: subject's cells share a stain residue, size scale and a shift of their phenotype)
CNMC_VARIATION = CellVariation(
    overlap=0.15,
    subject_spread=0.15,
    stain=0.25,
    illumination=0.04,
    blur=0.6,
    debris=0.3,
    label_noise=0.03,
)


def _look_stream(seed: int) -> np.random.Generator:
    """The stream of subject/acquisition looks and cell phenotypes: apart from the layout
    stream, so the file names and labels of a seed do not change with the realism knobs."""
    return np.random.default_rng([seed, 2])


def _variation(value: CellVariation | dict | None, default: CellVariation) -> CellVariation:
    if value is None:
        return default
    if isinstance(value, CellVariation):
        return value
    try:
        return CellVariation(**{**default.__dict__, **dict(value)})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad look-alike variation {dict(value)}: {exc}") from exc


class _Group:
    """What the cells of one subject / acquisition share: stain, size scale, phenotype shift."""

    def __init__(self, rng: np.random.Generator, variation: CellVariation) -> None:
        self.stain = draw_stain(rng, variation.stain)
        self.shift = (
            float(rng.normal(0.0, variation.subject_spread)) if variation.subject_spread else 0.0
        )

    def blastness(self, rng: np.random.Generator, label: int, variation: CellVariation) -> float:
        """Phenotype of one cell of class ``label``: with probability ``label_noise`` the
        other class's (the label is kept), centred on the class centre plus the group shift
        (towards the other class for blasts and normals alike), spread by ``overlap``."""
        shown = 1 - label if rng.random() < variation.label_noise else label
        shift = self.shift if shown == 0 else -self.shift
        return float(CLASS_CENTRES[shown] + shift + rng.normal(0.0, variation.overlap))


def _render_cell(
    rng: np.random.Generator,
    pix: np.random.Generator,
    group: _Group,
    label: int,
    variation: CellVariation,
    height: int,
    width: int,
    black: bool,
) -> Image.Image:
    """One crop of ``group``; the phenotype is drawn from the look stream ``rng`` (so which
    cells are atypical does not depend on the image size), the pixels from ``pix``."""
    t = group.blastness(rng, label, variation)
    blur = float(pix.uniform(0.0, variation.blur)) * min(height, width) / 64.0
    return render_blood_cell(
        pix,
        bool(label),
        height,
        width,
        black,
        blastness=t,
        stain=group.stain,
        illumination=variation.illumination,
        blur=blur,
        debris=variation.debris,
    )


def write_all_idb2(
    root: str | os.PathLike[str],
    n: int = 260,
    size: int = 64,
    seed: int = 0,
    subdir: str = "img",
    variation: CellVariation | dict | None = None,
    n_acquisitions: int = 12,
) -> Path:
    """Write ``n`` ALL-IDB2-style crops ``ImNNN_L.tif`` into ``root/subdir``; returns ``root``.

    Labels are a seeded ~50/50 shuffle; about one image in fifteen is a few pixels smaller in
    one dimension, like the real crops cut at the smear border. Each crop belongs to one of
    ``n_acquisitions`` hidden acquisitions (not in the file name, as in the release) that share
    stain, size scale and phenotype shift; ``variation`` (a :class:`CellVariation` or a dict of
    its fields overriding :data:`ALL_IDB2_VARIATION`) sets how realistic the cells are.
    """
    if n < 1 or size < 8 or n_acquisitions < 1:
        raise ConfigError(
            f"write_all_idb2 needs n >= 1, size >= 8, n_acquisitions >= 1 (got n={n}, size={size})"
        )
    var = _variation(variation, ALL_IDB2_VARIATION)
    rng, pix = _streams(seed)
    look = _look_stream(seed)
    root_path = Path(root)
    folder = root_path / subdir if subdir else root_path
    folder.mkdir(parents=True, exist_ok=True)
    labels = rng.permutation(np.arange(n) % 2)
    groups = [_Group(look, var) for _ in range(n_acquisitions)]
    member = rng.integers(0, n_acquisitions, n)
    width = max(3, len(str(n)))
    for i, (label, g) in enumerate(zip(labels, member), start=1):
        h = w = size
        if rng.random() < 1 / 15:
            shrink = max(1, size // 16) + int(rng.integers(0, max(1, size // 16)))
            if rng.random() < 0.5:
                h -= shrink
            else:
                w -= shrink
        img = _render_cell(look, pix, groups[g], int(label), var, h, w, black=False)
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


#: nuclei of the k-th child of a level-1 class: (blastness, aspect) -- dark clumped lymphocyte-like
#: round, light fine-textured blast-like round, intermediate elongated, light elongated
_CHILD_NUCLEI = [(0.0, 1.0), (1.0, 0.95), (0.45, 0.55), (0.8, 0.6)]


def _render_adp_patch(
    rng: np.random.Generator,
    picks: list[tuple[str, str | None, str | None]],
    size: int,
    tint: np.ndarray,
    stain: np.ndarray | None = None,
) -> Image.Image:
    """A tissue patch: a 2x2 grid of regions, one per active class. The level-1 class sets the
    region's base colour; cell nuclei (the same chromatin-textured nuclei as the blood cells,
    :func:`_draw_nucleus`) are scattered over it: small dark ones for a level-1-only pick, a
    child-specific phenotype (blastness, elongation) for a level-2 pick, oriented at a
    child-specific angle; a level-3 grandchild adds dots of its own colour. ``stain`` is the
    slide's stain (:func:`draw_stain`), ``tint`` its additive colour cast."""
    children = _adp_children()
    canvas = np.empty((size, size, 3), np.float32)
    half = size // 2
    quads = [(0, 0), (0, half), (half, 0), (half, half)]
    order = rng.permutation(4)
    owners = list(range(len(picks))) + list(rng.integers(0, len(picks), 4 - len(picks)))
    unit = size / 64.0
    for q, owner in zip(order, owners):
        y0, x0 = quads[q]
        h, w = size - half if y0 else half, size - half if x0 else half
        top, child, grand = picks[owner]
        region = np.empty((h, w, 3), np.float32)
        region[:] = _jitter(rng, _L1_COLOURS[top], 10)
        region += (_smooth_noise(rng, h, w, max(2.0, size / 12)) * 8)[..., None]
        yy, xx = _grid(h, w)
        if child is None:
            t, aspect, theta, n_nuclei = 0.1, 1.0, 0.0, int(rng.integers(2, 5))
        else:
            k = children[top].index(child)
            t, aspect = _CHILD_NUCLEI[k % len(_CHILD_NUCLEI)]
            theta = np.pi * k / max(4, len(children[top]))
            n_nuclei = int(rng.integers(4, 8))
        for _ in range(n_nuclei):
            radius = unit * (2.0 + 2.5 * t) * rng.uniform(0.85, 1.15)
            centre = (rng.uniform(0, h), rng.uniform(0, w))
            angle = theta + rng.normal(0, 0.1)
            _draw_nucleus(rng, region, yy, xx, centre, radius, t + rng.normal(0, 0.05), aspect,
                          angle)  # fmt: skip
        if grand is not None:
            colour = _DOT_COLOURS[children[child].index(grand) % len(_DOT_COLOURS)]
            n_dots = int(rng.integers(4, 8))
            for _ in range(n_dots):
                m = _shape_mask(yy, xx, rng.uniform(1, h - 1), rng.uniform(1, w - 1), size / 40 + 1)
                _paint(region, m, colour)
        canvas[y0 : y0 + h, x0 : x0 + w] = region
    canvas += tint
    canvas = apply_stain(canvas, stain)
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
    stain: float = 0.1,
) -> Path:
    """Write an ADP-style release: label CSV (real header) + ``img_res_1um_bicubic/`` patches.

    Labels respect the hierarchy (a child implies its parent; every row has a label).
    ``empty_columns`` are never set (pass ``ADP_EMPTY_COLUMNS`` to mimic the release's five
    empty classes). ``with_release_split`` adds ``splits/{train,valid,test}.npy`` (70/15/15).
    Every slide has its own H&E-like stain (optical-density gains of standard deviation
    ``stain``, as :func:`draw_stain`) and colour cast. Returns ``root``.
    """
    if n_slides < 1 or patches_per_slide < 1 or size < 8 or not stain >= 0:
        raise ConfigError(
            "write_adp needs n_slides >= 1, patches_per_slide >= 1, size >= 8, stain >= 0"
        )
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
        slide_stain = draw_stain(rng, stain)
        crops = np.sort(rng.choice(np.arange(1, 4000), size=patches_per_slide, replace=False))
        label_rows = _adp_label_rows(rng, patches_per_slide, set(empty_columns))
        for crop, picks in zip(crops, label_rows):
            name = f"{slide}.png_crop_{int(crop)}.png"
            vec = np.zeros(len(ADP_COLUMNS), np.uint8)
            for pick in picks:
                for col in pick:
                    if col is not None:
                        vec[col_index[col]] = 1
            _render_adp_patch(pix, picks, size, tint, slide_stain).save(
                img_dir / name, format="PNG"
            )
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
    variation: CellVariation | dict | None = None,
) -> Path:
    """Write a C-NMC-2019-style dataset; returns the root to give ``CnmcDataset``.

    ``layout="kaggle"`` writes ``root/C-NMC_Leukemia/{training_data,validation_data,
    testing_data}`` and returns ``root/C-NMC_Leukemia``; ``layout="official"`` writes
    ``root/C-NMC_training_data`` etc. (label CSV inside the prelim folder) and returns ``root``.
    Subjects are spread over folds 0-2 (one fold each); hem subjects are ``H<k>`` (the third
    is ``h3``, lower case, as in the release). Prelim subjects are new ones; the final test
    set's cells come from two more new subjects. Every subject's cells share a stain, size
    scale and phenotype shift (``variation``: a :class:`CellVariation` or a dict of its fields
    overriding :data:`CNMC_VARIATION`), so an image-level split is optimistic against a
    subject-grouped one, as in the real challenge.
    """
    if layout not in ("kaggle", "official"):
        raise ConfigError(f"write_cnmc layout={layout!r} is not known; use 'kaggle' or 'official'")
    if n_subjects_all < 1 or n_subjects_hem < 1 or images_per_subject < 1 or size < 8:
        raise ConfigError("write_cnmc needs at least one subject of each class, one image each")
    var = _variation(variation, CNMC_VARIATION)
    rng, pix = _streams(seed)
    look = _look_stream(seed)
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
            group = _Group(look, var)
            for j in range(images_per_subject):
                img = _render_cell(look, pix, group, label, var, size, size, black=True)
                img.save(folder / cell_name(subject, j, label), format="BMP")

    prelim_all = [str(x) for x in ids[n_subjects_all : n_subjects_all + 2]]
    prelim_hem = [f"H{n_subjects_hem + 1 + k}" for k in range(2)]
    prelim_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    next_cell = dict.fromkeys(prelim_all + prelim_hem, 0)
    prelim_groups = {s: _Group(look, var) for s in prelim_all + prelim_hem}
    for i in range(1, n_prelim + 1):
        label = int(rng.random() < 0.65)
        subject = str(rng.choice(prelim_all if label else prelim_hem))
        next_cell[subject] += int(rng.integers(1, 4))  # unique, increasing image/cell numbers
        patient_id = cell_name(subject, next_cell[subject], label)
        img = _render_cell(look, pix, prelim_groups[subject], label, var, size, size, black=True)
        img.save(prelim_dir / f"{i}.bmp", format="BMP")
        rows.append((patient_id, f"{i}.bmp", label))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Patient_ID", "new_names", "labels"])
    writer.writerows(rows)
    csv_path.write_text(buf.getvalue(), encoding="utf-8")

    final_dir.mkdir(parents=True, exist_ok=True)
    final_groups = [_Group(look, var) for _ in range(2)]  # one ALL, one normal subject
    for i in range(1, n_final + 1):
        label = int(rng.random() < 0.65)
        img = _render_cell(look, pix, final_groups[label], label, var, size, size, black=True)
        img.save(final_dir / f"{i}.bmp", format="BMP")
    return base
