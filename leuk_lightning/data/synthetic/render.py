"""Drawing primitives of the look-alike data: float32 HxWx3 canvases in 0..255.

:func:`render_blood_cell` draws one white blood cell (a lymphoblast or a normal lymphocyte) on a
smear background or on black, as in C-NMC's segmented crops; the dataset writers and the
detection look-alikes share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Separate generators for the layout (names, labels) and the pixels, so the file names
    and labels for a seed do not change with the image size."""
    return np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy + 0.5, xx + 0.5


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: Sequence[float]) -> None:
    """Alpha-blend a flat colour into ``canvas`` where ``mask`` (0..1) is set."""
    m = mask[..., None]
    canvas *= 1.0 - m
    canvas += m * np.asarray(colour, dtype=np.float32)


def _shape_mask(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    radius: float,
    aspect: float = 1.0,
    angle: float = 0.0,
    lobes: int = 0,
    lobe_depth: float = 0.0,
) -> np.ndarray:
    """Soft-edged ellipse (``aspect``, ``angle``) whose radius may vary with ``lobes`` bumps."""
    dy, dx = yy - cy, xx - cx
    dist = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx) - angle
    r = radius / np.sqrt(np.cos(theta) ** 2 + (np.sin(theta) / aspect) ** 2)
    if lobes:
        r = r * (1.0 + lobe_depth * np.cos(lobes * theta))
    return np.clip(r - dist + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Low-frequency noise (~N(0,1)) with features about ``cell`` pixels wide."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.BILINEAR))


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32) + rng.uniform(-amount, amount, 3)


def _to_uint8(canvas: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), mode="RGB")


def _draw_white_cell(
    rng: np.random.Generator, canvas: np.ndarray, blast: bool, scale: float
) -> None:
    """Paint one leukocyte at about the centre: blast (large light nucleus) or normal."""
    h, w = canvas.shape[:2]
    s = min(h, w)
    yy, xx = _grid(h, w)
    cy = h / 2 + rng.normal(0, 0.04 * s)
    cx = w / 2 + rng.normal(0, 0.04 * s)
    angle = rng.uniform(0, 2 * np.pi)
    if blast:
        rc = s * scale * rng.uniform(0.27, 0.33)
        cyto = _jitter(rng, (178, 168, 222), 12)
        rn = rc * rng.uniform(0.80, 0.90)
        nuc = _jitter(rng, (150, 102, 190), 14)
        aspect, lobes, depth, off = rng.uniform(0.88, 1.0), 0, 0.0, 0.05
    else:
        rc = s * scale * rng.uniform(0.20, 0.26)
        cyto = _jitter(rng, (218, 196, 222), 12)
        rn = rc * rng.uniform(0.55, 0.68)
        nuc = _jitter(rng, (78, 28, 104), 14)
        aspect, lobes, depth = rng.uniform(0.7, 0.95), int(rng.integers(2, 5)), 0.28
        off = 0.18
    _paint(canvas, _shape_mask(yy, xx, cy, cx, rc, rng.uniform(0.9, 1.0), angle), cyto)
    ny = cy + off * rc * np.sin(angle)
    nx = cx + off * rc * np.cos(angle)
    nmask = _shape_mask(yy, xx, ny, nx, rn, aspect, angle, lobes, depth)
    _paint(canvas, nmask, nuc)
    if blast:  # fine chromatin texture and 1-3 light nucleoli
        canvas += (rng.standard_normal((h, w)).astype(np.float32) * 14 * nmask)[..., None]
        for _ in range(int(rng.integers(1, 4))):
            a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.5) * rn
            m = _shape_mask(yy, xx, ny + d * np.sin(a), nx + d * np.cos(a), 0.14 * rn + 0.6)
            _paint(canvas, m * nmask, _jitter(rng, (196, 170, 226), 10))
    else:  # dense, clumped chromatin
        clumps = _smooth_noise(rng, h, w, max(2.0, rn / 2))
        canvas += (clumps * 10 * nmask)[..., None]


def _smear_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Pinkish plasma with a few red blood cells (pale centres) scattered over it."""
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = _jitter(rng, (236, 202, 212), 8)
    canvas += (_smooth_noise(rng, h, w, 8) * 4)[..., None]
    yy, xx = _grid(h, w)
    s = min(h, w)
    for _ in range(int(rng.integers(4, 9))):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), s * rng.uniform(0.09, 0.14)
        red = _jitter(rng, (206, 96, 112), 12)
        _paint(
            canvas, _shape_mask(yy, xx, cy, cx, r, rng.uniform(0.85, 1.0), rng.uniform(0, 3)), red
        )
        _paint(canvas, _shape_mask(yy, xx, cy, cx, 0.45 * r) * 0.5, (236, 170, 180))
    return canvas


def render_blood_cell(
    rng: np.random.Generator, blast: bool, height: int, width: int, black_background: bool
) -> Image.Image:
    """One synthetic single-cell crop (smear background, or black as in C-NMC)."""
    if black_background:
        canvas = np.zeros((height, width, 3), np.float32)
        _draw_white_cell(rng, canvas, blast, scale=1.25)
        canvas[canvas.sum(-1) < 3] = 0.0  # keep the background exactly black
    else:
        canvas = _smear_background(rng, height, width)
        _draw_white_cell(rng, canvas, blast, scale=1.0)
    canvas += rng.normal(0, 2.0, canvas.shape).astype(np.float32) * (canvas > 0)
    return _to_uint8(canvas)
