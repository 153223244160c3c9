"""Logging for stages: one format, to the rule's log file and stderr; tracebacks and a timing record kept in the log."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# A job's timing record is the last line of its log that starts with this tag (medxfer.runrecord reads it).
JOB_RECORD_TAG = "medxfer-job-record "

_work_start: float | None = None
_collector_paused = False


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


def mark_work_start() -> None:
    """Called where a stage begins its useful work (first training step, first fit, ...): what came before in the
    process (interpreter start, imports, loading data and models) counts as the job's fixed cost. First call wins."""
    global _work_start
    if _work_start is None:
        _work_start = time.time()
    _resume_collector()


def _pause_collector() -> None:
    """A job imports torch and the rest (about a million objects) before it works: the cyclic garbage collector would
    walk them again and again meanwhile (0.8 s of a torch job's 4 s of imports). Paused until the work starts."""
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def _resume_collector() -> None:
    """What the job imported and loaded lives as long as the process: frozen out of every later collection, the
    collection at exit included (another second per torch job)."""
    global _collector_paused
    if _collector_paused:
        gc.freeze()
        gc.enable()
        _collector_paused = False


@contextlib.contextmanager
def logged(
    log_path: str | os.PathLike,
    rule: str | None = None,
    wildcards: Mapping[str, str] | None = None,
    threads: int | None = None,
) -> Iterator[None]:
    """Append any exception's traceback to the rule's log file before it propagates, so failures are on record;
    with `rule` (a workflow job, which ends its process), end the log with the job's timing record (process start,
    imports done, work start, end, CPU time), and keep the garbage collector out of the imports and the exit."""
    ready, started = time.time(), process_start()  # now: the clock may be stepped while the job runs
    status = "failed"
    if rule is not None:
        _pause_collector()
    try:
        yield
        status = "ok"
    except BaseException:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as fh:
            fh.write(traceback.format_exc())
        raise
    finally:
        if rule is not None:
            record = job_record(rule, dict(wildcards or {}), threads, started, ready, status)
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a") as fh:
                fh.write(JOB_RECORD_TAG + json.dumps(record, sort_keys=True) + "\n")
            _resume_collector()
            gc.freeze()  # what the work made too: the exit's collection would walk it all for nothing


def process_start() -> float:
    """When this process started, in time.time() seconds, to the clock tick. psutil's create_time adds the boot time,
    which Linux gives in whole seconds: up to a second off, as much as a light job's imports."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        import psutil  # no /proc: psutil asks the OS its own way

        return psutil.Process().create_time()


def job_record(
    rule: str, wildcards: dict[str, str], threads: int | None, started: float, ready: float, status: str
) -> dict[str, Any]:
    """This process's timing: start (from the OS), imports done (`ready`), work start, end, and CPU seconds used
    by it and its children (data loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    record: dict[str, Any] = {
        "rule": rule,
        "wildcards": wildcards,
        "threads": threads,
        "host": platform.node(),
        "status": status,
        "process_start": started,
        "ready": ready,
        "work_start": max(_work_start or ready, ready),
        "end": time.time(),
        "cpu_seconds": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
        "max_rss_mb": round(own.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
    }
    torch = sys.modules.get("torch")
    if torch is not None:  # only jobs that loaded torch say how it ran
        record["torch_threads"] = torch.get_num_threads()
        record["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return record
