"""Training-time augmentation of whole image batches, with its own random draw for every image.

torchvision's v2 transforms draw one set of parameters per call, so a batch gets the same flip, angle and
deformation for every image unless it is looped over image by image (on this project's 2-core CPU: 0.5 ms per
64 px image for RandomAffine, 10 ms for ElasticTransform, more than the training step of a small network).
`BatchAugment` draws per-image parameters as tensors and warps the whole batch with one `grid_sample`: the affine
part follows v2.RandomAffine (degrees, translate as a fraction of the side, scale range), the elastic part
v2.ElasticTransform (a uniform [-1, 1] displacement field blurred with a Gaussian of `sigma` pixels and scaled by
`alpha / size`; tests/test_augment.py checks it against torchvision's `elastic` kernel), and random erasing follows
v2.RandomErasing (one black rectangle whose area and aspect ratio are drawn as there). Runs on the batch's device,
so a CUDA batch is augmented on the GPU; random numbers always come from the CPU generator (reproducible).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional

ERASE_TRIES = 10  # rectangles drawn per image to find one off its finding (v2.RandomErasing also tries 10)


def _uniform(n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n) * (high - low) + low


def blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """(size, size) matrix M with M @ x = x blurred along its first axis by a Gaussian under reflect padding.

    The kernel is 8 sigma + 1 wide as in torchvision, cut to what the side allows (reflect padding needs a radius
    below the side), so small images work with any sigma. A matrix product is far faster on a CPU than the grouped
    convolution it replaces.
    """
    radius = min(int(8 * sigma + 1) // 2, size - 1)
    offsets = torch.arange(-radius, radius + 1)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    index = torch.arange(size).unsqueeze(1) + offsets
    index = torch.where(index < 0, -index, index)
    index = torch.where(index >= size, 2 * (size - 1) - index, index)
    return torch.zeros(size, size).scatter_add_(1, index, kernel.expand(size, -1).contiguous())


def gaussian_blur(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of the last two axes of (..., H, W) with reflect padding (see `blur_matrix`)."""
    rows, cols = blur_matrix(field.shape[-2], sigma), blur_matrix(field.shape[-1], sigma)
    return rows @ field @ cols.T


class BatchAugment:
    """Flips, rotation, scale, translation, elastic deformation, brightness/contrast, Gaussian noise and random
    erasing for a float (B, C, H, W) batch in [0, 1]. `params`: every key of the config schema's `augment`
    (build_augment fills the ones a caller leaves out); a zero turns its transform off. Any number of channels
    (multi-window CT)."""

    def __init__(self, params: Mapping[str, Any], out_size: int | None = None) -> None:
        self.out_size = out_size  # a random out_size-pixel window at the input's scale, else the whole image
        self.hflip, self.vflip = float(params["hflip"]), float(params["vflip"])
        self.degrees, self.translate = float(params["degrees"]), float(params["translate"])
        self.scale = tuple(float(s) for s in params["scale"])
        self.elastic = float(params["elastic"])
        self.alpha, self.sigma = float(params["elastic_alpha"]), float(params["elastic_sigma"])
        self.brightness, self.contrast = float(params["brightness"]), float(params["contrast"])
        self.noise_std = float(params["noise_std"])
        self.erase, self.erase_scale = float(params["erase"]), tuple(float(s) for s in params["erase_scale"])
        self.erase_findings = bool(params["erase_findings"])
        self.affine = self.degrees > 0 or self.translate > 0 or self.scale != (1.0, 1.0)

    def affine_theta(self, n: int) -> torch.Tensor:
        """(n, 2, 3) sampling matrices of random rotation, scale and shift (the inverse maps, as affine_grid wants)."""
        angle = _uniform(n, -self.degrees, self.degrees) * math.pi / 180
        scale = _uniform(n, *self.scale)
        shift = _uniform(2 * n, -self.translate, self.translate).view(n, 2) * 2  # fraction of the side -> [-1, 1]
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        inverse = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], 1)  # R(-a) / s
        return torch.cat([inverse, -(inverse @ shift.unsqueeze(-1))], dim=2)

    def elastic_displacement(self, n: int, height: int, width: int) -> torch.Tensor:
        """(n, H, W, 2) displacement in grid units, as v2.ElasticTransform draws it; zero for images not chosen."""
        chosen = torch.rand(n) < self.elastic
        field = torch.zeros(n, 2, height, width)
        if chosen.any():  # the others keep a zero field: no random numbers or blur spent on them
            drawn = gaussian_blur(torch.rand(int(chosen.sum()), 2, height, width) * 2 - 1, self.sigma)
            field[chosen] = drawn * torch.tensor([self.alpha / width, self.alpha / height]).view(1, 2, 1, 1)
        return field.permute(0, 2, 3, 1)

    def erased(self, n: int, height: int, width: int, findings: torch.Tensor | None = None) -> torch.Tensor:
        """(n, H, W) bool: one rectangle for each image chosen with probability `erase`, as v2.RandomErasing draws it
        (its area a uniform fraction in erase_scale of the image, its aspect ratio log-uniform in [0.3, 3.3]). Where
        torchvision retries a rectangle that does not fit, its sides are cut to the image's.

        With `erase_findings` off, an image gets the first of ERASE_TRIES rectangles that touches no pixel of its
        finding (`findings`, (n, H, W) bool), and none if all of them do: erasing the finding would leave an image
        whose label no longer shows. The tries are drawn with or without `findings`, so a run draws the same."""
        chosen = torch.rand(n) < self.erase
        tries = 1 if self.erase_findings else ERASE_TRIES
        drawn = self.rectangles(n * tries, height, width).view(tries, n, height, width).transpose(0, 1)
        if tries == 1 or findings is None:
            return drawn[:, 0] & chosen.view(n, 1, 1)
        clear = ~(drawn & findings.unsqueeze(1)).flatten(2).any(dim=2)  # (n, tries)
        first = clear.float().argmax(dim=1)
        return drawn[torch.arange(n), first] & (chosen & clear.any(dim=1)).view(n, 1, 1)

    def rectangles(self, n: int, height: int, width: int) -> torch.Tensor:
        """(n, H, W) bool: n rectangles of erase_scale's area and a random aspect ratio, each at a random place."""
        area = _uniform(n, *self.erase_scale) * height * width
        ratio = torch.exp(_uniform(n, math.log(0.3), math.log(3.3)))
        tall = (area * ratio).sqrt().round().clamp(1, height)
        wide = (area / ratio).sqrt().round().clamp(1, width)
        top = (torch.rand(n) * (height - tall + 1)).floor().view(n, 1, 1)
        left = (torch.rand(n) * (width - wide + 1)).floor().view(n, 1, 1)
        rows, cols = torch.arange(height).view(1, height, 1), torch.arange(width).view(1, 1, width)
        return (rows >= top) & (rows < top + tall.view(n, 1, 1)) & (cols >= left) & (cols < left + wide.view(n, 1, 1))

    def window_theta(self, theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """`theta` confined to a random out_size-pixel window of a height x width image, at the image's scale."""
        if self.out_size > min(height, width):
            raise ValueError(f"views of {self.out_size} px are larger than the {height}x{width} px images")
        n = theta.shape[0]
        fraction = torch.tensor([self.out_size / width, self.out_size / height]).view(1, 2, 1)
        centre = (_uniform(2 * n, -1.0, 1.0).view(n, 2) * (1 - fraction.view(1, 2))).unsqueeze(-1)
        window = theta * fraction
        return torch.cat([window[..., :2], window[..., 2:] + centre], dim=2)

    def __call__(
        self, batch: torch.Tensor, masks: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The augmented batch; with `masks` (B, H, W), also those masks moved by the same warp and flips (the
        brightness, contrast and noise leave them alone, an erased rectangle clears them; with erase_findings off
        the rectangles avoid them), as `(batch, masks)`.
        Masks draw no random numbers of their own, so a run draws the same augmentation with or without them."""
        n, _, height, width = batch.shape
        out = batch
        moved = None if masks is None else masks.unsqueeze(1).to(out)
        if self.affine or self.elastic > 0 or self.out_size is not None:
            theta = self.affine_theta(n) if self.affine else torch.eye(2, 3).expand(n, 2, 3)
            if self.out_size is not None:
                theta = self.window_theta(theta, height, width)
                height = width = self.out_size
            grid = functional.affine_grid(theta, [n, 1, height, width], align_corners=False)
            if self.elastic > 0:
                grid = grid + self.elastic_displacement(n, height, width)
            grid = grid.to(out)
            out = functional.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            if moved is not None:
                moved = functional.grid_sample(moved, grid, mode="nearest", align_corners=False)
        for p, dim in ((self.hflip, -1), (self.vflip, -2)):
            if p > 0:
                flip = (torch.rand(n) < p).view(n, 1, 1, 1).to(out.device)
                out = torch.where(flip, out.flip(dim), out)
                moved = None if moved is None else torch.where(flip, moved.flip(dim), moved)
        if self.brightness > 0 or self.contrast > 0:
            contrast = _uniform(n, 1 - self.contrast, 1 + self.contrast).view(n, 1, 1, 1).to(out)
            brightness = _uniform(n, 1 - self.brightness, 1 + self.brightness).view(n, 1, 1, 1).to(out)
            mean = out.mean(dim=(-2, -1), keepdim=True)
            out = (((out - mean) * contrast + mean) * brightness).clamp(0.0, 1.0)
        if self.noise_std > 0:
            out = (out + torch.randn(out.shape).to(out) * self.noise_std).clamp(0.0, 1.0)
        if self.erase > 0:  # last, so the rectangle is black as the deletion metric's fill, without noise
            findings = None if moved is None else (moved.squeeze(1) > 0.5).cpu()
            erased = self.erased(n, out.shape[-2], out.shape[-1], findings).unsqueeze(1).to(out.device)
            out = out.masked_fill(erased, 0.0)
            moved = None if moved is None else moved.masked_fill(erased, 0.0)
        return out if moved is None else (out, moved.squeeze(1) > 0.5)


def build_augment(params: Mapping[str, Any], out_size: int | None = None) -> BatchAugment:
    """The augmentation the config's `augment` keys describe; keys left out take the schema's defaults, as they do in
    a config (so `{}` is the default augmentation, not none: turning a transform off takes a zero). `out_size`:
    each image becomes a random window of that many pixels at its own scale (SimCLR's `pretrain.view_size`)."""
    from medxfer.sections import augment_entry

    return BatchAugment(augment_entry(params), out_size)


def augment_batch(batch: torch.Tensor, transform: BatchAugment) -> torch.Tensor:
    """Apply `transform` to a float (B, C, H, W) batch in [0, 1], with fresh random parameters per image."""
    return transform(batch)
