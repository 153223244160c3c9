"""Deep features from a fine-tuned network: the pooled penultimate layer, for every split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medxfer import models, runtime
from medxfer.cache import load_cached
from medxfer.io import save_npz
from medxfer.log import get_logger
from medxfer.train import autocast, to_device


def _forward_pooled(model: nn.Module, x: torch.Tensor, stages: int) -> torch.Tensor:
    """Pooled penultimate layer; with stages=2 also the global-average-pooled output of the stage before it."""
    if stages == 1:
        return model.forward_head(model.forward_features(x), pre_logits=True)
    levels = len(model.feature_info)  # cut to the kept levels on a truncated model
    final, intermediates = model.forward_intermediates(x, indices=list(range(levels - stages, levels)))  # one pass
    earlier = [t.float().mean(dim=(2, 3)) for t in intermediates[:-1]]
    return torch.cat([model.forward_head(final, pre_logits=True).float(), *earlier], dim=1)


@torch.inference_mode()
def pooled_features(
    model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int, stages: int = 1
) -> np.ndarray:
    """timm forward_features + the model's own pooling (pre_logits), in large batches.

    `stages=2` appends the pooled features of the second-to-last stage (mid-level texture, which can matter for
    subtle findings); the penultimate-layer columns come first either way.
    """
    if stages not in (1, 2):
        raise ValueError(f"stages must be 1 or 2, got {stages!r}")
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = to_device(torch.from_numpy(images[start : start + batch_size]), device)
        with autocast(device):
            feats = _forward_pooled(model, models.normalize(batch), stages)
        chunks.append(feats.float().flatten(1).cpu().numpy())
    if not chunks:
        if stages == 1:
            return np.zeros((0, model.num_features), dtype=np.float32)
        probe = torch.zeros((1, *images.shape[1:]), dtype=torch.uint8)
        return np.zeros((0, _forward_pooled(model, models.normalize(probe).to(device), stages).shape[1]), np.float32)
    return np.concatenate(chunks).astype(np.float32)


def extract_features(
    model_dir: Path,
    manifest: Path,
    images: Path,
    out_path: Path,
    batch_size: int = 256,
    threads: int = 1,
    device: str = "auto",
    log_path: Path | None = None,
    stages: int = 1,
) -> dict[str, Any]:
    """Write X/y/ids/study per split and the class names to one .npz; NaN or inf features are an error."""
    logger = get_logger("medxfer.features", log_path)
    runtime.configure(threads, seed=0)
    dev = runtime.select_device(device)
    model, meta = models.load(model_dir, dev)
    data = load_cached(manifest, images)
    if data.classes != meta["classes"]:
        raise ValueError(f"{model_dir}: model classes {meta['classes']} differ from data set classes {data.classes}")
    arrays: dict[str, np.ndarray] = {"classes": np.array(data.classes)}
    for name, split in data.splits.items():
        feats = pooled_features(model, split.images, dev, batch_size, stages)
        if not np.isfinite(feats).all():
            raise ValueError(f"{model_dir}: non-finite features on the {name} split")
        arrays |= {
            f"X_{name}": feats,
            f"y_{name}": split.labels,
            f"ids_{name}": split.ids,
            f"study_{name}": split.studies,
        }
    save_npz(out_path, **arrays)
    dims = {name: arrays[f"X_{name}"].shape for name in data.splits}
    logger.info("features of %s (%s): %s", meta["arch"], model_dir, dims)
    return {"dims": dims}
