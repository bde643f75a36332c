"""Batched, per-sample augmentation and normalisation on the device.

torchvision.transforms.v2 draws ONE set of random parameters per call, so applied to a batch
tensor it flips or rotates every image the same way. The papers' augmentation (random flips,
rotations, translations) needs independent draws per image; ``BatchAugment`` does that for a
whole batch with a single ``affine_grid``/``grid_sample`` call, on whatever device the batch is
on, and fuses the uint8 -> float conversion and the normalisation into the same step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Normalize(nn.Module):
    """uint8 [0, 255] (or float [0, 1]) images -> (x - mean) / std, per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor, inplace: bool = False) -> Tensor:
        """Normalise; ``inplace`` reuses a float batch the caller owns (no extra copy)."""
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        if images.dtype == torch.uint8:
            return images.float().mul_(1 / 255.0).sub_(mean).div_(std)
        if inplace and images.is_floating_point():
            return images.sub_(mean).div_(std)
        return (images.float() - mean) / std


class BatchAugment(nn.Module):
    """Random flips, rotation and translation, drawn independently for every image of a batch.

    Args:
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rotation: rotations uniform in [-rotation/2, rotation/2) degrees; 360 means any angle.
        right_angles: rotate by a random multiple of 90 degrees instead (lossless).
        translate: maximum shift as a fraction of the image size, per axis.
        center_crop: crop this many pixels (square) from the centre after the geometric
            transform, the crop of Prellberg & Kramer (300 of 450 px); ``None`` keeps the size.
        center_crop_fraction: crop ``round(fraction * side)`` pixels instead (2/3 is the
            paper's 300 of 450 at any image size, e.g. 43 of 64 px in the demo).
        fill: value of pixels that come from outside the image (0: black, as C-NMC crops).
        crop_first: take the centre crop BEFORE the flips and the affine transform, as the
            Prellberg & Kramer code does (``CenterCrop(300)`` then ``RandomAffine``,
            ``dataset.py``); ``translate`` is then a fraction of the CROPPED side (0.2 of 300 px
            = 60 px) and rotated-in corners come from outside the crop (filled), not from the
            image's border. ``False``: transform the whole image, then crop (shift 0.2 of 450 px).
    """

    def __init__(
        self,
        hflip: float = 0.0,
        vflip: float = 0.0,
        rotation: float = 0.0,
        right_angles: bool = False,
        translate: float = 0.0,
        center_crop: int | None = None,
        fill: float = 0.0,
        center_crop_fraction: float | None = None,
        crop_first: bool = False,
    ) -> None:
        super().__init__()
        if center_crop is not None and center_crop_fraction is not None:
            raise ValueError("give center_crop or center_crop_fraction, not both")
        self.crop_first = crop_first
        self.center_crop_fraction = center_crop_fraction
        self.hflip, self.vflip = hflip, vflip
        self.rotation, self.right_angles = rotation, right_angles
        self.translate, self.center_crop, self.fill = translate, center_crop, fill

    def _affine(self, b: int, device: torch.device, gen: torch.Generator | None) -> Tensor | None:
        if self.rotation <= 0 and not self.right_angles and self.translate <= 0:
            return None
        if self.right_angles:
            angle = torch.randint(0, 4, (b,), device=device, generator=gen).float() * (math.pi / 2)
        else:
            u = torch.rand(b, device=device, generator=gen)
            angle = (u - 0.5) * math.radians(self.rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(b, 2, 3, device=device)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        if self.translate > 0:
            shift = (torch.rand(b, 2, device=device, generator=gen) * 2 - 1) * self.translate * 2
            theta[:, :, 2] = shift  # normalised coordinates span 2 units per image side
        return theta

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a float batch ``[B, C, H, W]`` (any value range); the input is not modified.

        Flips are drawn first, then the affine transform; when there is an affine transform the
        flips are folded into its sampling grid (a flip negates a normalised coordinate exactly),
        so the whole augmentation is one ``grid_sample`` pass over the batch.
        """
        b = images.shape[0]
        x = self._crop(images) if self.crop_first else images
        hflip = vflip = None
        if self.hflip > 0:
            hflip = torch.rand(b, device=x.device, generator=generator) < self.hflip
        if self.vflip > 0:
            vflip = torch.rand(b, device=x.device, generator=generator) < self.vflip
        theta = self._affine(b, x.device, generator)
        if theta is not None and not (self.right_angles and self.translate <= 0):
            for row, mask in ((0, hflip), (1, vflip)):
                if mask is not None:
                    theta[:, row, :] *= torch.where(mask, -1.0, 1.0).to(theta.dtype)[:, None]
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
            shifted = x - self.fill if self.fill else x
            x = F.grid_sample(
                shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            if self.fill:
                x = x.add_(self.fill)
        else:
            x = _flip_where(_flip_where(x, hflip, -1), vflip, -2)
            if theta is not None:  # lossless right-angle rotations
                k = torch.round(torch.atan2(theta[:, 1, 0], theta[:, 0, 0]) / (math.pi / 2)) % 4
                x = torch.stack([torch.rot90(img, int(r), dims=(-2, -1)) for img, r in zip(x, k)])
        return x if self.crop_first else self._crop(x)

    def _crop(self, x: Tensor) -> Tensor:
        if self.center_crop is not None:
            return center_crop(x, self.center_crop)
        if self.center_crop_fraction is not None:
            return center_crop(x, crop_size(x, self.center_crop_fraction))
        return x


def _flip_where(images: Tensor, mask: Tensor | None, dim: int) -> Tensor:
    """Flip along ``dim`` the images selected by ``mask`` (a new tensor; input unchanged)."""
    if mask is None or not bool(mask.any()):
        return images
    idx = mask.nonzero().flatten()
    return images.index_copy(0, idx, images.index_select(0, idx).flip(dim))


def crop_size(images: Tensor, fraction: float) -> int:
    """Side of a centre crop of ``fraction`` of the shorter image side (at least 1 px)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"center_crop_fraction={fraction} must lie in (0, 1]")
    return max(1, round(fraction * min(images.shape[-2:])))


def center_crop(images: Tensor, size: int) -> Tensor:
    """Crop a square of ``size`` pixels from the centre of a batch."""
    h, w = images.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"center crop {size} px is larger than the {h}x{w} images")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


class BatchTransform(nn.Module):
    """The full on-device pipeline: uint8 batch -> (augment when training) -> normalised float."""

    def __init__(
        self,
        normalize: Normalize,
        augment: BatchAugment | None = None,
        eval_center_crop: int | None = None,
        eval_center_crop_fraction: float | None = None,
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.augment = augment
        self.eval_center_crop = eval_center_crop
        self.eval_center_crop_fraction = eval_center_crop_fraction

    def forward(self, images: Tensor, train: bool) -> Tensor:
        owned = images.dtype != torch.float32
        x = images.float().mul_(1 / 255.0) if images.dtype == torch.uint8 else images.float()
        if train and self.augment is not None:
            augmented = self.augment(x)
            owned, x = owned or augmented is not x, augmented
        elif self.eval_center_crop is not None:
            x = center_crop(x, self.eval_center_crop)
        elif self.eval_center_crop_fraction is not None:
            x = center_crop(x, crop_size(x, self.eval_center_crop_fraction))
        # normalise in place when x is a buffer of our own (saves a full copy of the batch)
        return self.normalize(x.contiguous() if owned else x, inplace=owned)
