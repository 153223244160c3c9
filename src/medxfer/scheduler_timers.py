"""One pending re-evaluation timer in Snakemake's scheduler, not one per finished job.

Snakemake 9 (`--max-jobs-per-timespan`, default 100/1s, always on) ends every scheduling round by starting a timer
that wakes the scheduler one timespan later, and that wake-up is a round too. Each finished job wakes the scheduler
once more, so each finished job starts another self-renewing chain: after N jobs there are N timer threads and N
rounds a second, each of which stats every ready job's inputs and re-evaluates its params. On a 113-job run that was
a third of a core in the main process (594 s of CPU in 28 min), taken from the jobs. A wake-up that is already
pending covers a new request with the same delay: it fires sooner, and the round it starts asks again while jobs are
ready.
"""

from __future__ import annotations

import threading
from typing import Any

_PENDING = "_medxfer_pending_reevaluations"


def _schedule_reevaluation_once(self: Any, delay: float) -> None:
    """Wake the scheduler after `delay` seconds unless a wake-up with that delay is already pending."""
    pending: dict[float, threading.Timer] = self.__dict__.setdefault(_PENDING, {})
    timer = pending.get(delay)
    if timer is not None and timer.is_alive():
        return
    timer = threading.Timer(delay, self._open_jobs.release)
    pending[delay] = timer
    timer.start()


def coalesce_reevaluation_timers() -> bool:
    """Patch Snakemake's JobScheduler (idempotent). False where this Snakemake has no such method: nothing to fix."""
    try:
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:
        return False
    if not hasattr(JobScheduler, "_schedule_reevalutation"):  # sic: Snakemake's spelling
        return False
    JobScheduler._schedule_reevalutation = _schedule_reevaluation_once
    return True
