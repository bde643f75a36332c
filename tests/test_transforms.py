"""Batched augmentation: independent draws per image, flips folded exactly into the affine."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from leuk_lightning.data.transforms import BatchAugment, BatchTransform, Normalize


def _reference(x: torch.Tensor, aug: BatchAugment, seed: int) -> torch.Tensor:
    """Flip the drawn images explicitly, then rotate them: the meaning of BatchAugment."""
    gen = torch.Generator().manual_seed(seed)
    b = x.shape[0]
    h = torch.rand(b, generator=gen) < aug.hflip
    v = torch.rand(b, generator=gen) < aug.vflip
    x = torch.where(h.view(-1, 1, 1, 1), x.flip(-1), x)
    x = torch.where(v.view(-1, 1, 1, 1), x.flip(-2), x)
    angle = (torch.rand(b, generator=gen) - 0.5) * math.radians(aug.rotation)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = angle.cos(), -angle.sin()
    theta[:, 1, 0], theta[:, 1, 1] = angle.sin(), angle.cos()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def test_flips_folded_into_the_rotation_equal_flip_then_rotate():
    x = torch.rand(16, 3, 20, 24)
    aug = BatchAugment(hflip=0.5, vflip=0.5, rotation=360)
    out = aug(x, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out, _reference(x, aug, 3), atol=1e-5)


def test_each_image_gets_its_own_flip_and_input_is_untouched():
    x = torch.arange(2 * 1 * 1 * 4, dtype=torch.float32).view(2, 1, 1, 4).repeat(32, 1, 1, 1)
    before = x.clone()
    out = BatchAugment(hflip=0.5)(x, generator=torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert 0 < int(flipped.sum()) < x.shape[0]  # some flipped, some not
    assert torch.equal(x, before)


def test_batch_transform_normalises_uint8_without_touching_the_input():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    t = BatchTransform(Normalize([0.5, 0.4, 0.3], [0.2, 0.2, 0.2]), BatchAugment(hflip=1.0))
    expected = (
        images.flip(-1).float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    ) / 0.2
    assert torch.allclose(t(images, train=True), expected, atol=1e-6)
    evaluated = t(images, train=False)
    assert torch.allclose(evaluated, expected.flip(-1), atol=1e-6)
    floats = images.float() / 255
    copy = floats.clone()
    t(floats, train=False)
    assert torch.equal(floats, copy)
