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
    """uint8 images (an in-memory array or a memmap) with their targets, fetched a whole batch at a time (one fancy
    index instead of one call per image); augmentation happens afterwards on the batch (see `prepare_batch`)."""

    def __init__(self, images: np.ndarray, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.array(self.images[index])), self.targets[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.asarray(indices)
        return torch.from_numpy(np.asarray(self.images[index])), self.targets[torch.from_numpy(index)]


def _whole_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch  # __getitems__ already returns the stacked batch


def train_loader(
    split: Split,
    targets: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    imbalance: str = "none",
    pin_memory: bool = False,
) -> DataLoader:
    """uint8 batches, shuffled (or, with `weighted_sampler`, class-balanced with replacement) from `generator`.

    A last batch of one image is dropped: batch norm cannot train on it.
    """
    dataset = CachedImages(split.images, targets)
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


def prepare_batch(images: torch.Tensor, augment: BatchAugment, device: torch.device, views: int = 1) -> torch.Tensor:
    """uint8 (B, C, H, W) -> on `device`, augmented per image, normalised; `views=2` stacks two independent
    augmentations of each image as (B, 2, C, H, W) (SimCLR). On CUDA the augmentation runs on the GPU."""
    batch = images.to(device, non_blocking=True).float() / 255.0
    if views == 1:
        return models.standardize(augment(batch))
    return torch.stack([models.standardize(augment(batch)) for _ in range(views)], dim=1)
