"""Device, threads and seeding: the same choices for every stage that runs torch."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

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
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def get_logger(name: str, log_path: str | os.PathLike | None = None) -> logging.Logger:
    """Log to the rule's log file (if given) and to stderr, one format everywhere."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_path, mode="a")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


@contextlib.contextmanager
def logged(log_path: str | os.PathLike) -> Iterator[None]:
    """Append any exception's traceback to the rule's log file before it propagates, so failures are on record."""
    try:
        yield
    except BaseException:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as fh:
            fh.write(traceback.format_exc())
        raise
