"""Logging for stages: one format, to the rule's log file and stderr; tracebacks kept in the log."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path


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
