"""Drawing primitives of the look-alike data: float32 HxWx3 canvases in 0..255.

:func:`render_blood_cell` draws one white blood cell (a lymphoblast or a normal lymphocyte) on a
smear background or on black, as in C-NMC's segmented crops; the dataset writers and the
detection look-alikes share it.

Realism (the knobs of :class:`CellVariation`, applied by the dataset writers):

* **morphology overlap**: a cell's phenotype is a continuous *blastness* ``t`` in 0..1 (0: small
  cell, dark clumped lobed nucleus; 1: large cell, big light round nucleus with fine chromatin
  and nucleoli); every feature is interpolated on ``t``, so cells of the two classes whose ``t``
  meet in the middle are genuinely ambiguous;
* **stain and illumination**: :func:`draw_stain` draws a per-subject / per-slide stain (optical
  density gains per channel) and :func:`apply_stain` applies it with a brightness gain and a
  linear illumination gradient (a black background stays black);
* **focus blur**: a Gaussian blur of the whole crop;
* **debris**: platelets and a neighbouring white cell cut by the crop border (smear crops) or
  segmentation errors, a bite of the cell blacked out (C-NMC's black background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class CellVariation:
    """How far the look-alike cells are from clean prototypes (every knob 0: prototypes).

    * ``overlap``: standard deviation of a cell's blastness around its class centre (0.2 normal,
      0.8 blast); the classes' Bayes error grows with it (about 2 % at 0.15, 10 % at 0.25).
    * ``subject_spread``: standard deviation of a subject's (C-NMC) or acquisition's (ALL-IDB2)
      mean blastness shift: some patients' cells all look more, or less, typical.
    * ``stain``: standard deviation of a subject's / acquisition's per-channel optical-density
      log-gain (stain colour and strength), and of its cell-size (magnification) log-scale / 2.
    * ``illumination``: standard deviation of each image's log brightness gain and the largest
      relative brightness gradient across it.
    * ``blur``: largest focus-blur sigma in pixels at 64 px (scaled with the image size); each
      image draws a sigma uniformly in 0..blur.
    * ``debris``: probability that a crop holds debris: a neighbouring cell cut by the border
      (smear) or a segmentation error (black background); smear crops also get 0-3 platelets
      with this probability.
    * ``label_noise``: share of cells that show the other class's phenotype while keeping their
      label (mislabelled or atypical cells).
    """

    overlap: float = 0.0
    subject_spread: float = 0.0
    stain: float = 0.0
    illumination: float = 0.0
    blur: float = 0.0
    debris: float = 0.0
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"CellVariation.{name} must be a finite number >= 0, got {value}")
        if self.label_noise > 0.5 or self.debris > 1:
            raise ValueError("CellVariation.label_noise must be <= 0.5 and debris <= 1")


#: blastness of the two class prototypes (normal, blast)
CLASS_CENTRES = (0.2, 0.8)


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


def _lerp(a: Sequence[float] | float, b: Sequence[float] | float, t: float) -> np.ndarray:
    return (1.0 - t) * np.asarray(a, dtype=np.float32) + t * np.asarray(b, dtype=np.float32)


def _to_uint8(canvas: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), mode="RGB")


def _draw_nucleus(
    rng: np.random.Generator,
    canvas: np.ndarray,
    yy: np.ndarray,
    xx: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    blastness: float,
    aspect: float,
    angle: float,
    lobes: int = 0,
    lobe_depth: float = 0.0,
) -> np.ndarray:
    """Paint a nucleus whose colour and chromatin follow ``blastness`` (0: dark, clumped;
    1: light, fine texture with light nucleoli); returns its mask. Shared by the blood cells
    and the ADP tissue nuclei, so both domains have the same low-level structure."""
    t = float(np.clip(blastness, 0.0, 1.0))
    h, w = canvas.shape[:2]
    ny, nx = centre
    nmask = _shape_mask(yy, xx, ny, nx, radius, aspect, angle, lobes, lobe_depth)
    _paint(canvas, nmask, _jitter(rng, _lerp((78, 28, 104), (150, 102, 190), t), 14))
    fine = rng.standard_normal((h, w)).astype(np.float32) * 14 * t
    clumps = _smooth_noise(rng, h, w, max(2.0, radius / 2)) * 10 * (1.0 - t)
    canvas += ((fine + clumps) * nmask)[..., None]
    if rng.random() < t**2:  # 1-3 light nucleoli, mostly in blast-like nuclei
        for _ in range(int(rng.integers(1, 4))):
            a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.5) * radius
            m = _shape_mask(yy, xx, ny + d * np.sin(a), nx + d * np.cos(a), 0.14 * radius + 0.6)
            _paint(canvas, m * nmask, _jitter(rng, (196, 170, 226), 10))
    return nmask


def _draw_white_cell(
    rng: np.random.Generator,
    canvas: np.ndarray,
    blast: bool,
    scale: float,
    *,
    blastness: float | None = None,
    centre: tuple[float, float] | None = None,
) -> None:
    """Paint one leukocyte at about the centre (or at ``centre``, y/x in pixels).

    ``blastness`` (0..1) sets the phenotype continuously; ``None`` draws the prototype of
    ``blast`` (large light nucleus) or of a normal lymphocyte (small, dark, lobed nucleus).
    """
    t = float(np.clip(CLASS_CENTRES[int(blast)] if blastness is None else blastness, 0.0, 1.0))
    t = (t - CLASS_CENTRES[0]) / (CLASS_CENTRES[1] - CLASS_CENTRES[0])  # prototypes at 0 and 1
    t = float(np.clip(t, -0.25, 1.25))
    h, w = canvas.shape[:2]
    s = min(h, w)
    yy, xx = _grid(h, w)
    if centre is None:
        cy = h / 2 + rng.normal(0, 0.04 * s)
        cx = w / 2 + rng.normal(0, 0.04 * s)
    else:
        cy, cx = centre
    angle = rng.uniform(0, 2 * np.pi)
    rc = s * scale * (float(_lerp(0.23, 0.30, t)) + rng.uniform(-0.03, 0.03))
    cyto = _jitter(rng, _lerp((218, 196, 222), (178, 168, 222), float(np.clip(t, 0, 1))), 12)
    rn = rc * (float(_lerp(0.615, 0.85, t)) + rng.uniform(-0.05, 0.05))
    aspect = rng.uniform(float(_lerp(0.7, 0.88, t)), float(_lerp(0.95, 1.0, t)))
    depth = 0.28 * float(np.clip(1.0 - t, 0.0, 1.0)) ** 1.5
    lobes = int(rng.integers(2, 5)) if depth > 0.02 else 0
    off = float(_lerp(0.18, 0.05, float(np.clip(t, 0, 1))))
    _paint(canvas, _shape_mask(yy, xx, cy, cx, rc, rng.uniform(0.9, 1.0), angle), cyto)
    nuc_centre = (cy + off * rc * np.sin(angle), cx + off * rc * np.cos(angle))
    _draw_nucleus(rng, canvas, yy, xx, nuc_centre, rn, float(np.clip(t, 0, 1)), aspect, angle,
                  lobes, depth)  # fmt: skip


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


def draw_stain(rng: np.random.Generator, strength: float) -> np.ndarray:
    """One subject's / slide's stain: 3 optical-density gains and a cell-size scale, as a
    4-vector ``[g_r, g_g, g_b, scale]`` (all 1 when ``strength`` is 0)."""
    if strength <= 0:
        return np.ones(4, np.float32)
    gains = np.exp(rng.normal(0.0, strength, 3))
    scale = np.exp(rng.normal(0.0, strength / 2))
    return np.asarray([*gains, scale], np.float32)


def apply_stain(
    canvas: np.ndarray,
    stain: np.ndarray | None,
    rng: np.random.Generator | None = None,
    illumination: float = 0.0,
) -> np.ndarray:
    """Scale optical densities per channel (``I' = 255 (I/255)^g``: white and black stay), then
    a random brightness gain and linear gradient of size ``illumination`` (black stays black)."""
    out = canvas
    if stain is not None and not np.allclose(stain[:3], 1.0):
        out = 255.0 * np.power(np.clip(out, 0.0, 255.0) / 255.0, stain[:3].astype(np.float32))
    if illumination > 0 and rng is not None:
        h, w = out.shape[:2]
        yy, xx = _grid(h, w)
        a = rng.uniform(0, 2 * np.pi)
        ramp = ((xx / w - 0.5) * np.cos(a) + (yy / h - 0.5) * np.sin(a)) * 2  # -1..1
        gain = np.exp(rng.normal(0.0, illumination)) * (1 + rng.uniform(0, illumination) * ramp)
        out = out * gain[..., None].astype(np.float32)
    return out.astype(np.float32)


def _add_debris(
    rng: np.random.Generator, canvas: np.ndarray, black_background: bool, scale: float
) -> None:
    """Platelets and a neighbouring cell at the border (smear), or a segmentation error: a bite
    of the cell blacked out (black background)."""
    h, w = canvas.shape[:2]
    s = min(h, w)
    yy, xx = _grid(h, w)
    if black_background:
        a = rng.uniform(0, 2 * np.pi)
        d = s * rng.uniform(0.3, 0.4)
        r = s * rng.uniform(0.06, 0.13)
        m = _shape_mask(yy, xx, h / 2 + d * np.sin(a), w / 2 + d * np.cos(a), r)
        canvas *= (1.0 - m)[..., None]
        return
    for _ in range(int(rng.integers(0, 4))):  # platelets: small purple granular bodies
        m = _shape_mask(yy, xx, rng.uniform(0, h), rng.uniform(0, w), s * rng.uniform(0.02, 0.04))
        _paint(canvas, m, _jitter(rng, (150, 90, 170), 14))
    a = rng.uniform(0, 2 * np.pi)  # a neighbouring white cell, mostly outside the crop
    d = s * rng.uniform(0.62, 0.75)
    _draw_white_cell(
        rng,
        canvas,
        blast=bool(rng.random() < 0.5),
        scale=scale,
        blastness=float(rng.uniform(0.0, 1.0)),
        centre=(h / 2 + d * np.sin(a), w / 2 + d * np.cos(a)),
    )


def render_blood_cell(
    rng: np.random.Generator,
    blast: bool,
    height: int,
    width: int,
    black_background: bool,
    *,
    blastness: float | None = None,
    stain: np.ndarray | None = None,
    illumination: float = 0.0,
    blur: float = 0.0,
    debris: float = 0.0,
) -> Image.Image:
    """One synthetic single-cell crop (smear background, or black as in C-NMC).

    Without the keyword knobs: a clean prototype of ``blast`` (the old look). ``blastness``
    (0..1) sets the phenotype continuously (see :class:`CellVariation`); ``stain`` is a
    :func:`draw_stain` vector (its 4th entry scales the cell size); ``illumination`` the
    size of the random brightness gain and gradient; ``blur`` the focus-blur sigma in pixels;
    ``debris`` the probability of debris (smear) or a segmentation error (black).
    """
    scale = float(stain[3]) if stain is not None else 1.0
    if black_background:
        canvas = np.zeros((height, width, 3), np.float32)
        _draw_white_cell(rng, canvas, blast, scale=1.25 * scale, blastness=blastness)
        if debris > 0 and rng.random() < debris:
            _add_debris(rng, canvas, True, scale)
    else:
        canvas = _smear_background(rng, height, width)
        if debris > 0 and rng.random() < debris:
            _add_debris(rng, canvas, False, scale)
        _draw_white_cell(rng, canvas, blast, scale=scale, blastness=blastness)
    canvas = apply_stain(canvas, stain, rng, illumination)
    background = canvas.sum(-1) < 3
    canvas += rng.normal(0, 2.0, canvas.shape).astype(np.float32)
    if black_background:
        canvas[background] = 0.0  # keep the background exactly black
    img = _to_uint8(canvas)
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(blur)))
        if black_background:  # the segmentation mask is applied after focusing: sharp edge
            arr = np.asarray(img).copy()
            arr[background] = 0
            img = Image.fromarray(arr, mode="RGB")
    return img
