"""Training batches from the uint8 image cache: the loader, its class-balancing sampler and the on-device
augmentation; the objectives (SimCLR's views) and the fit loop share them, so they sit below both."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler

from medxfer import models
from medxfer.augment import BatchAugment
from medxfer.cache import Split


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1, so imbalance does not drown the minority class.

    Here, not with the losses, because the weighted sampler draws with them too.
    """
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = counts.sum() / np.maximum(counts, 1) / n_classes
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


class CachedImages(Dataset):
    """uint8 images (an in-memory array or a memmap) with their targets, and the finding masks (B, H, W) when
    given, fetched a whole batch at a time (one fancy index instead of one call per image); augmentation happens
    afterwards on the batch (see `prepare_batch`)."""

    def __init__(self, images: np.ndarray, targets: torch.Tensor, masks: torch.Tensor | None = None) -> None:
        self.images, self.targets, self.masks = images, targets, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(item[0] for item in self.__getitems__([index]))

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = np.asarray(indices)
        images, chosen = torch.from_numpy(np.asarray(self.images[index])), torch.from_numpy(index)
        return (images, self.targets[chosen]) + (() if self.masks is None else (self.masks[chosen],))


def _whole_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return batch  # __getitems__ already returns the stacked batch


def train_loader(
    split: Split,
    targets: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    imbalance: str = "none",
    pin_memory: bool = False,
    masks: torch.Tensor | None = None,
) -> DataLoader:
    """uint8 batches, shuffled (or, with `weighted_sampler`, class-balanced with replacement) from `generator`;
    (images, targets) or, with `masks`, (images, targets, masks).

    A last batch of one image is dropped: batch norm cannot train on it.
    """
    dataset = CachedImages(split.images, targets, masks)
    if imbalance == "weighted_sampler":
        per_class = class_weights(split.labels, int(split.labels.max()) + 1)
        sampler = WeightedRandomSampler(per_class[split.labels].double(), len(dataset), generator=generator)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    batch_size = min(batch_size, len(dataset))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=generator,
        collate_fn=_whole_batch,
        pin_memory=pin_memory,
        drop_last=len(dataset) % batch_size == 1,
    )


def prepare_batch(
    images: torch.Tensor,
    augment: BatchAugment,
    device: torch.device,
    views: int = 1,
    masks: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, C, H, W) -> on `device`, augmented per image, normalised; `views=2` stacks two independent
    augmentations of each image as (B, 2, C, H, W) (SimCLR). On CUDA the augmentation runs on the GPU.
    With `masks` (B, H, W; one view only): `(batch, masks)`, the masks moved as their images were."""
    batch = images.to(device, non_blocking=True).float() / 255.0
    if masks is not None:
        if views != 1:
            raise ValueError("finding masks go with one view per image, not SimCLR's two")
        out, moved = augment(batch, masks.to(device, non_blocking=True))
        return models.standardize(out), moved
    if views == 1:
        return models.standardize(augment(batch))
    return torch.stack([models.standardize(augment(batch)) for _ in range(views)], dim=1)
