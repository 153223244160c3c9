"""Device, threads and seeding: the same choices for every stage that runs torch."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from medxfer.runrecord import cpu_info


def select_device(requested: str = "auto") -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA where there is none is an error, not a silent fallback."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{requested}' requested but CUDA is not available on this machine")
    return device


def describe(device: torch.device) -> str:
    """The hardware a timing comes from: the same job ran twice as slow on an AVX2-only host as on the one before,
    and without this line in the log the two wall times looked like a regression."""
    threads = torch.get_num_threads()
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}) with {threads} CPU threads"
    return f"cpu ({cpu_info()[0]}, {torch.backends.cpu.get_cpu_capability()} kernels) with {threads} threads"


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


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Pinned, non-blocking copies on CUDA; the CPU batch as it is."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; off on the CPU, where it would change the numbers and save nothing."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
