"""Test-time augmentation: average a classifier's logits over 8 views, in ONE batched forward.

``rot8`` are the rotations by 0, 45, ..., 315 degrees used by Prellberg & Kramer (ISBI 2019,
Sec. 4.1); ``d4`` the 8 symmetries of the square (4 right-angle rotations, with and without a
horizontal flip), which are lossless. Right angles are exact (flips and transposes); the 45-degree
view is resampled once with ``grid_sample`` (bilinear) and the other odd multiples of 45 are its
right-angle rotations. Pixels rotated in from outside the image get ``fill`` -- pass the
normalised value of black (``-mean / std``) for C-NMC's black backgrounds on normalised input.
The views of a batch ``[B, C, H, W]`` are stacked to ``[8B, C, H, W]`` and the model runs once.
Images must be square (right-angle rotations must keep the shape).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TTA_MODES = ("rot8", "d4")


def rotate(images: Tensor, degrees: float, fill: float | Sequence[float] | Tensor = 0.0) -> Tensor:
    """Rotate a batch counter-clockwise about its centre (bilinear); outside pixels get ``fill``."""
    b = images.shape[0]
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    # affine_grid maps output to input coordinates; (x, y) with y pointing down
    theta = images.new_tensor([[cos, -sin, 0.0], [sin, cos, 0.0]]).expand(b, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    fill_t = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    if fill_t.ndim == 1:
        fill_t = fill_t.view(1, -1, 1, 1)
    out = F.grid_sample(
        images - fill_t, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out + fill_t


def rot90(images: Tensor, k: int) -> Tensor:
    """``torch.rot90(images, k, dims=(-2, -1))`` (counter-clockwise) from flips and transposes,
    which ONNX exporters support."""
    k %= 4
    if k == 0:
        return images
    if k == 1:
        return images.flip(-1).transpose(-2, -1)
    if k == 2:
        return images.flip(-2).flip(-1)
    return images.transpose(-2, -1).flip(-1)


def tta_views(
    images: Tensor, mode: str = "rot8", fill: float | Sequence[float] | Tensor = 0.0
) -> Tensor:
    """The 8 views of every image, stacked view-major: ``[8 * B, C, H, W]``."""
    if mode not in TTA_MODES:
        raise ValueError(f"TTA mode {mode!r} is not known; use one of {TTA_MODES}")
    h, w = images.shape[-2:]
    if h != w:
        raise ValueError(f"TTA needs square images, got {h}x{w}")
    # rot8: 0 and 45 degrees, each turned by 0-3 right angles; d4: identity and mirror image
    second = rotate(images, 45.0, fill) if mode == "rot8" else images.flip(-1)
    bases = (images, second)
    views = [rot90(base, k) for base in bases for k in range(4)]
    return torch.cat(views, dim=0)


class TTAWrapper(nn.Module):
    """Wrap any classifier ``model(x) -> logits [B, K]`` to return the mean logits of 8 views.

    Args:
        model: the classifier (any ``nn.Module`` taking the same input).
        mode: ``rot8`` (0, 45, ..., 315 degrees) or ``d4`` (dihedral group of the square).
        fill: value (scalar or per channel) for pixels rotated in from outside (``rot8`` only).
    """

    def __init__(
        self,
        model: nn.Module,
        mode: str = "rot8",
        fill: float | Sequence[float] | Tensor = 0.0,
    ) -> None:
        super().__init__()
        if mode not in TTA_MODES:
            raise ValueError(f"TTA mode {mode!r} is not known; use one of {TTA_MODES}")
        self.model = model
        self.mode = mode
        self.register_buffer("fill", torch.as_tensor(fill, dtype=torch.float32), persistent=False)

    @property
    def num_views(self) -> int:
        return 8

    def forward(self, images: Tensor) -> Tensor:
        b = images.shape[0]
        logits = self.model(tta_views(images, self.mode, self.fill.to(images.dtype)))
        return logits.reshape(self.num_views, b, *logits.shape[1:]).mean(dim=0)
