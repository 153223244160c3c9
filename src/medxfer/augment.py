"""Training-time augmentation of uint8 image batches with torchvision transforms v2."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchvision.transforms import v2


class RandomBrightnessContrast(v2.Transform):
    """Brightness and contrast for any number of channels (v2.ColorJitter's contrast takes only 1 or 3, and
    multi-window CT has 2 or more). Factors are drawn from [1 - x, 1 + x]; contrast scales about the image mean."""

    def __init__(self, brightness: float, contrast: float) -> None:
        super().__init__()
        self.brightness, self.contrast = brightness, contrast

    def make_params(self, flat_inputs: list[Any]) -> dict[str, float]:
        draw = lambda x: float(torch.empty(1).uniform_(1 - x, 1 + x)) if x > 0 else 1.0  # noqa: E731
        return {"brightness": draw(self.brightness), "contrast": draw(self.contrast)}

    def transform(self, inpt: Any, params: dict[str, float]) -> Any:
        if not isinstance(inpt, torch.Tensor) or not inpt.is_floating_point():
            return inpt
        mean = inpt.mean(dim=(-2, -1), keepdim=True)
        out = (inpt - mean) * params["contrast"] + mean
        return (out * params["brightness"]).clamp(0.0, 1.0)


class ElasticDeformation(v2.ElasticTransform):
    """v2.ElasticTransform whose smoothing kernel fits small images: torchvision blurs the displacement field with
    an 8-sigma kernel under reflect padding, which fails once the kernel is wider than the image (sigma 5 on a
    32 px image), so sigma is capped at what the image allows."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        side = min(v2.functional.get_size(next(i for i in flat_inputs if isinstance(i, torch.Tensor))))
        configured, self.sigma = self.sigma, [min(s, (side - 2) / 8) for s in self.sigma]
        try:
            return super().make_params(flat_inputs)
        finally:
            self.sigma = configured


def build_augment(params: Mapping[str, Any]) -> v2.Transform:
    """Geometric + intensity transforms for one (C, H, W) float image in [0, 1] (v2 draws one set per call).

    Keys as in the config schema's `augment`; a missing or zero key leaves its transform out, so `{}` is identity.
    Elastic deformation (a smooth random displacement field, `alpha` pixels strong, `sigma` pixels smooth) mimics
    the soft-tissue and positioning variation between radiographs that affine transforms cannot.
    """
    transforms: list[v2.Transform] = []
    if params.get("hflip", 0) > 0:
        transforms.append(v2.RandomHorizontalFlip(p=params["hflip"]))
    if params.get("vflip", 0) > 0:
        transforms.append(v2.RandomVerticalFlip(p=params["vflip"]))
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
    if params.get("elastic", 0) > 0:
        elastic = ElasticDeformation(
            alpha=params.get("elastic_alpha", 30.0),
            sigma=params.get("elastic_sigma", 5.0),
            interpolation=v2.InterpolationMode.BILINEAR,
        )
        transforms.append(v2.RandomApply([elastic], p=params["elastic"]))
    if params.get("brightness", 0) > 0 or params.get("contrast", 0) > 0:
        transforms.append(RandomBrightnessContrast(params.get("brightness", 0), params.get("contrast", 0)))
    if params.get("noise_std", 0) > 0:
        transforms.append(v2.GaussianNoise(sigma=params["noise_std"], clip=True))
    return v2.Compose(transforms) if transforms else v2.Identity()


def augment_batch(batch: torch.Tensor, transform: v2.Transform) -> torch.Tensor:
    """Apply `transform` with fresh random parameters to every image of a float (B, C, H, W) batch in [0, 1]."""
    return torch.stack([transform(image) for image in batch])
