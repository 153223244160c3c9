"""Deep features from a fine-tuned network: the pooled penultimate layer, for every split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medxfer import models, runtime
from medxfer.cache import load_cached
from medxfer.identity import read as read_identity
from medxfer.identity import to_array as identity_array
from medxfer.io import save_npz
from medxfer.log import get_logger, mark_work_start
from medxfer.runtime import autocast, to_device
from medxfer.sections import FeaturesSection


def forward_pooled(model: nn.Module, x: torch.Tensor, stages: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled penultimate layer (with stages=2 also the global-average-pooled output of the stage before it) and the
    logits, which timm's classifier computes from that same penultimate layer."""
    if stages == 1:
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
        return pre_logits, model.get_classifier()(pre_logits)
    levels = len(model.feature_info)  # cut to the kept levels on a truncated model
    final, intermediates = model.forward_intermediates(x, indices=list(range(levels - stages, levels)))  # one pass
    pre_logits = model.forward_head(final, pre_logits=True)
    earlier = [t.float().mean(dim=(2, 3)) for t in intermediates[:-1]]
    return torch.cat([pre_logits.float(), *earlier], dim=1), model.get_classifier()(pre_logits)


@torch.inference_mode()
def features_and_proba(
    model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int, stages: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (see `pooled_features`) and softmax class probabilities from one forward pass, so a stage
    that needs both (robustness) does not run the network twice."""
    if stages not in (1, 2):
        raise ValueError(f"stages must be 1 or 2, got {stages!r}")
    model.eval()
    if len(images) == 0:
        images = np.zeros((1, *images.shape[1:]), dtype=np.uint8)  # the widths, from one probe image
        feats, proba = features_and_proba(model, images, device, batch_size, stages)
        return feats[:0], proba[:0]
    feature_chunks, proba_chunks = [], []
    for start in range(0, len(images), batch_size):
        batch = to_device(torch.from_numpy(images[start : start + batch_size]), device)
        with autocast(device):
            feats, logits = forward_pooled(model, models.normalize(batch), stages)
        feature_chunks.append(feats.float().flatten(1).cpu().numpy())
        proba_chunks.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(feature_chunks).astype(np.float32), np.concatenate(proba_chunks)


def pooled_features(
    model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int, stages: int
) -> np.ndarray:
    """timm forward_features + the model's own pooling (pre_logits), in large batches.

    `stages=2` appends the pooled features of the second-to-last stage (mid-level texture, which can matter for
    subtle findings); the penultimate-layer columns come first either way.
    """
    return features_and_proba(model, images, device, batch_size, stages)[0]


def extract_features(
    model_dirs: Sequence[Path],
    manifest: Path,
    images: Path,
    out_paths: Sequence[Path],
    settings: FeaturesSection,
    threads: int = 1,
    device: str = "auto",
    log_path: Path | None = None,
) -> dict[str, Any]:
    """For each model, write X/y/ids/study per split and the class names to its .npz; NaN or inf features are an
    error. Several models share one process and one decode of the images (a torch start-up costs seconds).
    `settings`: the config's `features` section (medxfer.sections)."""
    if len(model_dirs) != len(out_paths):
        raise ValueError(f"{len(model_dirs)} models but {len(out_paths)} output paths")
    logger = get_logger("medxfer.features", log_path)
    runtime.configure(threads, seed=0)
    dev = runtime.select_device(device)
    data = load_cached(manifest, images)
    dims: dict[str, dict[str, tuple[int, ...]]] = {}
    for model_dir, out_path in zip(model_dirs, out_paths, strict=True):
        model, meta = models.load(model_dir, dev, fold=True)
        if data.classes != meta["classes"]:
            raise ValueError(
                f"{model_dir}: model classes {meta['classes']} differ from data set classes {data.classes}"
            )
        mark_work_start()  # first call wins: the first model's load still counts as fixed cost
        arrays: dict[str, np.ndarray] = {"classes": np.array(data.classes)}
        arrays |= {"ordinal": np.array(True)} if meta.get("ordinal") else {}  # graded classes (fusion.is_ordinal)
        if "identity" in meta:  # a fine-tuned model's; a pretrained checkpoint has none
            ident = read_identity(meta, Path(model_dir) / models.META_FILE, "features")
            arrays["identity"] = identity_array({k: v for k, v in ident.items() if k != "classifier"})
        for name, split in data.splits.items():
            feats = pooled_features(model, split.images, dev, settings.batch_size, settings.stages)
            if not np.isfinite(feats).all():
                raise ValueError(f"{model_dir}: non-finite features on the {name} split")
            arrays |= {
                f"X_{name}": feats,
                f"y_{name}": split.labels,
                f"ids_{name}": split.ids,
                f"study_{name}": split.studies,
            }
        save_npz(out_path, **arrays)
        dims[str(out_path)] = {name: arrays[f"X_{name}"].shape for name in data.splits}
        logger.info("features of %s (%s): %s", meta["arch"], model_dir, dims[str(out_path)])
    return {"dims": dims}
