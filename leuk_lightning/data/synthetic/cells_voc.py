"""Synthetic cell-detection data in the LabelImg Pascal VOC layout (demo data and test fixture).

Each picture is a pinkish smear (the ALL-IDB look-alike background of :mod:`.render`) with
several white cells at random, non-overlapping places, drawn by the same renderer as the
classification look-alikes: ``all`` cells are blasts (large, light nucleus), ``hem`` cells
normal lymphocytes (smaller, dark lobed nucleus). Each image has a *dominant* class (half the
images each, as the paper's 150 + 150 selection) that most of its cells belong to; the rest
are of the other class (always fewer: the dominant class is a strict majority), so the
detector must localise and classify every cell.
The ground-truth box of a cell is the bounding box of the pixels its drawing changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from leuk_lightning.data.detection.voc import (
    ANNOTATIONS_DIR,
    IMAGES_DIR,
    VocAnnotation,
    VocObject,
    write_voc_xml,
)
from leuk_lightning.data.synthetic.render import (
    _draw_white_cell,
    _smear_background,
    _streams,
    _to_uint8,
)
from leuk_lightning.errors import ConfigError

#: class names as written in the XML files (the dataset's default ``classes``)
CELL_CLASSES = ("all", "hem")


def _free(box: tuple[int, int, int, int], taken: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    return all(x1 <= a0 or a1 <= x0 or y1 <= b0 or b1 <= y0 for a0, b0, a1, b1 in taken)


def write_cells_voc(
    root: str | os.PathLike[str],
    n_images: int = 300,
    size: int = 128,
    seed: int = 0,
    cells_per_image: tuple[int, int] = (2, 5),
    dominant_share: float = 0.75,
) -> Path:
    """Write ``root/images/cell_NNNN.png`` + ``root/annotations/cell_NNNN.xml``; returns root.

    ``cells_per_image`` is the inclusive range of cells per picture; each cell belongs to the
    picture's dominant class with probability ``dominant_share``, capped so that the dominant
    class keeps a strict majority. Deterministic for ``seed``.
    """
    if n_images < 1 or size < 32:
        raise ConfigError(f"write_cells_voc needs n_images >= 1 and size >= 32 (got {size})")
    lo, hi = cells_per_image
    if not 1 <= lo <= hi:
        raise ConfigError(f"cells_per_image={cells_per_image} must be 1 <= low <= high")
    rng, pix = _streams(seed)
    root_path = Path(root)
    (root_path / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    dominant = rng.permutation(np.arange(n_images) % 2)  # 0: all, 1: hem
    width = max(4, len(str(n_images)))
    for i, dom in enumerate(dominant, start=1):
        canvas = _smear_background(pix, size, size)
        objects: list[VocObject] = []
        taken: list[tuple[int, int, int, int]] = []
        n_cells = int(rng.integers(lo, hi + 1))
        n_other = min(int((rng.random(n_cells) >= dominant_share).sum()), (n_cells - 1) // 2)
        n_placed = [0, 0]  # dominant, other
        for j in range(n_cells):
            other = j >= n_cells - n_other  # dominant cells first, so they are placed
            if other and n_placed[1] + 1 >= n_placed[0]:
                continue  # keep the dominant class a strict majority
            cls = 1 - int(dom) if other else int(dom)
            patch = int(size * rng.uniform(0.26, 0.36))
            for _attempt in range(30):
                x0 = int(rng.integers(0, size - patch + 1))
                y0 = int(rng.integers(0, size - patch + 1))
                if _free((x0, y0, x0 + patch, y0 + patch), taken):
                    break
            else:
                continue  # no room left for this cell
            region = canvas[y0 : y0 + patch, x0 : x0 + patch]
            before = region.copy()
            _draw_white_cell(pix, region, blast=cls == 0, scale=1.0)
            changed = np.abs(region - before).sum(-1) > 6.0
            rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
            if len(rows) == 0:
                continue
            box = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)
            taken.append((x0, y0, x0 + patch, y0 + patch))
            n_placed[int(other)] += 1
            objects.append(VocObject(CELL_CLASSES[cls], *(int(v) for v in box)))
        canvas += pix.normal(0, 2.0, canvas.shape).astype(np.float32)
        name = f"cell_{i:0{width}d}"
        image_path = root_path / IMAGES_DIR / f"{name}.png"
        _to_uint8(canvas).save(image_path, format="PNG")
        ann = VocAnnotation(
            filename=image_path.name,
            width=size,
            height=size,
            depth=3,
            folder=IMAGES_DIR,
            path=str(image_path),
            objects=objects,
        )
        write_voc_xml(root_path / ANNOTATIONS_DIR / f"{name}.xml", ann)
    return root_path
