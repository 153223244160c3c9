"""Batched inference under inference mode: what evaluation, heatmaps and robustness share, without training code."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medxfer import models
from medxfer.runtime import autocast, to_device


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256, mirror: bool = False
) -> torch.Tensor:
    """Float32 logits for uint8 (N, C, H, W) images, in large batches under inference mode (on the CPU).
    `mirror` (test-time augmentation, finetune.tta): the mean of the logits of each image and its mirror image."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_device(torch.from_numpy(images[start : start + batch_size]), device)
        with autocast(device):
            x = models.normalize(batch)
            logits = model(x).float()
            if mirror:
                logits = (logits + model(x.flip(-1).contiguous(memory_format=torch.channels_last)).float()) / 2
            out.append(logits.cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def predict_proba(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (softmax) for uint8 (N, C, H, W) images."""
    return softmax_proba(predict_logits(model, images, device, batch_size))


def softmax_proba(logits: torch.Tensor) -> np.ndarray:
    """Class probabilities of float32 logits, as every reader of a model computes them."""
    return torch.softmax(logits, dim=1).numpy() if len(logits) else np.zeros((0, 0), dtype=np.float32)
