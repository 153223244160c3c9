"""Snakemake's scheduler keeps one pending wake-up, not one self-renewing timer per finished job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOBS = 12

SNAKEFILE = f"""
import sys, threading
from pathlib import Path
sys.path.insert(0, {str(REPO / "src")!r})
import medxfer.scheduler_timers
if config["coalesce"]:
    medxfer.scheduler_timers.coalesce_reevaluation_timers()
rule all:
    input: expand("out/{{i}}.txt", i=range({JOBS}))
rule job:
    output: "out/{{i}}.txt"
    shell: "sleep 0.2; touch {{output}}"
onsuccess:
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    Path("timers.txt").write_text(str(len(timers)))
"""


@pytest.mark.parametrize("coalesce", [True, False])
def test_finished_jobs_do_not_each_leave_a_scheduler_timer(tmp_path: Path, coalesce: bool) -> None:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--config", f"coalesce={coalesce}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(list((tmp_path / "out").iterdir())) == JOBS
    timers = int((tmp_path / "timers.txt").read_text())
    if coalesce:
        assert timers <= 1
    else:  # Snakemake's own behaviour, which the patch exists for: if this fails, upstream fixed it
        assert timers >= JOBS // 2
