"""Training-time augmentation of uint8 image batches with torchvision transforms v2."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchvision.transforms import v2


def build_augment(params: Mapping[str, Any]) -> v2.Transform:
    """Geometric + intensity transforms for one (C, H, W) float image in [0, 1] (v2 draws one set per call)."""
    transforms: list[v2.Transform] = []
    if params.get("hflip", 0) > 0:
        transforms.append(v2.RandomHorizontalFlip(p=params["hflip"]))
    if params.get("degrees", 0) > 0 or params.get("translate", 0) > 0 or list(params.get("scale", [1, 1])) != [1, 1]:
        translate = params.get("translate", 0)
        transforms.append(
            v2.RandomAffine(
                degrees=params.get("degrees", 0),
                translate=(translate, translate) if translate else None,
                scale=tuple(params.get("scale", [1, 1])),
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    if params.get("brightness", 0) > 0 or params.get("contrast", 0) > 0:
        transforms.append(v2.ColorJitter(brightness=params.get("brightness", 0), contrast=params.get("contrast", 0)))
    if params.get("noise_std", 0) > 0:
        transforms.append(v2.GaussianNoise(sigma=params["noise_std"], clip=True))
    return v2.Compose(transforms) if transforms else v2.Identity()


def augment_batch(batch: torch.Tensor, transform: v2.Transform) -> torch.Tensor:
    """Apply `transform` with fresh random parameters to every image of a float (B, C, H, W) batch in [0, 1]."""
    return torch.stack([transform(image) for image in batch])
