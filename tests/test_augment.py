import pytest
import torch

from medxfer.augment import augment_batch, build_augment

FULL = dict(hflip=0.5, degrees=10, translate=0.05, scale=[0.9, 1.1], brightness=0.2, contrast=0.2, noise_std=0.02)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_augment_keeps_shape_dtype_and_range(channels):
    torch.manual_seed(0)
    batch = torch.rand(8, channels, 32, 32)
    out = augment_batch(batch, build_augment(FULL))
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, batch)


def test_each_image_gets_its_own_draw():
    torch.manual_seed(0)
    batch = torch.rand(1, 1, 32, 32).repeat(6, 1, 1, 1)
    out = augment_batch(batch, build_augment(FULL))
    assert len({tuple(img.flatten()[:50].tolist()) for img in out}) == 6


def test_seeded_augmentation_is_reproducible():
    batch = torch.rand(4, 1, 32, 32)
    torch.manual_seed(3)
    first = augment_batch(batch, build_augment(FULL))
    torch.manual_seed(3)
    assert torch.equal(first, augment_batch(batch, build_augment(FULL)))


def test_no_augmentation_is_identity():
    batch = torch.rand(4, 1, 16, 16)
    params = dict(hflip=0, degrees=0, translate=0, scale=[1, 1], brightness=0, contrast=0, noise_std=0)
    assert torch.equal(augment_batch(batch, build_augment(params)), batch)
