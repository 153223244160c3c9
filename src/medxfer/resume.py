"""Per-epoch resume state of a training run: one file per run, written atomically after every epoch, restored
only by the same run (same settings, seed, initial weights and data), and removed with its empty folders when done.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medxfer.cache import CachedDataset
from medxfer.io import atomic_path

RESUME_FILE = "state.pt"
STATE_KEYS = ("epoch", "history", "best_loss", "best_state", "bad_epochs", "stopped")
"""The fit loop's own state that a resume file carries besides weights, optimizer, scheduler and RNGs."""


def resume_fingerprint(model: nn.Module, data: CachedDataset, params: Mapping[str, Any], seed: int) -> str:
    """What a resume state must match: settings, seed, the initial weights and the training data."""
    digest = hashlib.sha256(json.dumps({"params": params, "seed": seed}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    train = data.splits["train"]
    digest.update(np.ascontiguousarray(train.images).tobytes())
    digest.update(train.labels.tobytes())
    return digest.hexdigest()


def save_resume(
    resume_dir: Path,
    fingerprint: str,
    state: Mapping[str, Any],
    model: nn.Module,
    extra: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    device: torch.device,
) -> None:
    """One file, replaced atomically: tensors, numbers, strings and containers only (loads with weights_only)."""
    payload = {
        "fingerprint": fingerprint,
        **{k: state[k] for k in STATE_KEYS},
        "model": model.state_dict(),
        "extra": extra.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "generator": generator.get_state(),
    }
    with atomic_path(Path(resume_dir) / RESUME_FILE) as tmp:
        torch.save(payload, tmp)


def load_resume(
    resume_dir: Path | None,
    fingerprint: str,
    model: nn.Module,
    extra: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    device: torch.device,
    logger: Any,
) -> dict | None:
    """Restore a resume state written by this same run (same fingerprint); anything else is ignored."""
    path = Path(resume_dir) / RESUME_FILE if resume_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged state only costs the epochs it held
        logger.warning("%s: unreadable resume state (%s); starting from epoch 1", path, err)
        return None
    if payload.get("fingerprint") != fingerprint:
        logger.warning("%s: resume state of another run (settings, data or init differ); starting from epoch 1", path)
        return None
    model.load_state_dict(payload["model"])
    extra.load_state_dict(payload["extra"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng_cpu"])
    if device.type == "cuda" and payload["rng_cuda"] is not None:
        torch.cuda.set_rng_state(payload["rng_cuda"], device)
    generator.set_state(payload["generator"])
    logger.info("resuming from %s after epoch %d", path, payload["epoch"])
    return {k: payload[k] for k in STATE_KEYS}


def clear_resume(resume_dir: Path | None, root: Path | None = None) -> None:
    """Remove a finished run's resume state (after its outputs are written) and each folder above it, up to and
    including `root` (the folder of all runs' states), that this leaves empty: the last run leaves no empty tree.
    """
    if resume_dir is None:
        return
    resume_dir = Path(resume_dir).resolve()
    if resume_dir.exists():
        shutil.rmtree(resume_dir)
    if root is None:
        return
    root = Path(root).resolve()
    for folder in resume_dir.parents:
        if folder != root and root not in folder.parents:
            break
        try:
            folder.rmdir()  # only if empty, so a sibling run's state (being written now, too) stays
        except OSError:
            break
        if folder == root:
            break
