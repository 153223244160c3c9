"""Device, threads and seeding: the same choices for every stage that runs torch."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def select_device(requested: str = "auto") -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA where there is none is an error, not a silent fallback."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{requested}' requested but CUDA is not available on this machine")
    return device


def configure(threads: int, seed: int, deterministic: bool = True) -> None:
    """Use exactly the threads Snakemake gave us and make CPU runs reproducible bit for bit."""
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    seed_everything(seed)
    # Subnormal floats are 10-100x slower on x86 CPUs; augmented images (zero-padded borders, flat regions) make
    # the backward pass produce them, which cost 20-30 % of a CPU training step here. Flushing them to zero is
    # deterministic and changes nothing a model can resolve.
    torch.set_flush_denormal(True)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
