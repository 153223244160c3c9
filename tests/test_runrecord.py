"""Job timing records and report/run.json: real processes, real logs, real clocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medxfer.io import read_json
from medxfer.runrecord import RUN_RECORD, cost_summary, read_job_records, run_record, write_run_record

JOB = """
import sys, time
from medxfer.log import logged, mark_work_start
log, rule, fixed, fail = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "fail"
with logged(log, rule, {"target": "t"}, 1):
    time.sleep(fixed)          # stands in for loading data before the first useful step
    mark_work_start()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass                   # 0.3 s of real CPU work
    if fail:
        raise ValueError("bad input")
"""


def run_job(results: Path, rule: str, name: str, fixed: float = 0.4, fail: bool = False) -> int:
    log = results / "logs" / rule / f"{name}.log"
    args = [str(log), rule, str(fixed), "fail" if fail else "ok"]
    return subprocess.run([sys.executable, "-c", JOB, *args], capture_output=True).returncode


def test_a_job_leaves_its_timing_record_in_its_log(tmp_path):
    assert run_job(tmp_path, "train_classifier", "a") == 0
    (record,) = read_job_records(tmp_path)
    assert record["rule"] == "train_classifier" and record["wildcards"] == {"target": "t"}
    assert record["status"] == "ok" and record["threads"] == 1
    assert record["process_start"] < record["ready"] < record["work_start"] < record["end"]
    assert record["work_start"] - record["ready"] >= 0.4  # the sleep before mark_work_start is fixed cost
    assert record["end"] - record["work_start"] >= 0.3
    assert record["cpu_seconds"] >= 0.3
    assert "torch_threads" not in record  # this job never loaded torch


def test_a_failed_job_is_on_record_with_its_traceback(tmp_path):
    assert run_job(tmp_path, "ingest_dataset", "bad", fail=True) != 0
    (record,) = read_job_records(tmp_path)
    assert record["status"] == "failed"
    assert "ValueError: bad input" in (tmp_path / "logs" / "ingest_dataset" / "bad.log").read_text()


COLLECTOR = """
import gc, json, sys
from medxfer.log import logged, mark_work_start
seen = {"before": gc.isenabled()}
with logged(sys.argv[1], "finetune_model", {}, 1):
    seen["loading"] = gc.isenabled()
    if sys.argv[2] == "works":
        mark_work_start()
        seen["working"] = gc.isenabled()
        seen["frozen_at_work_start"] = gc.get_freeze_count()
seen["after"] = gc.isenabled()
seen["frozen_after"] = gc.get_freeze_count()
print(json.dumps(seen))
"""


@pytest.mark.parametrize("marks_work", [True, False])
def test_a_job_loads_without_the_garbage_collector_and_works_with_it(tmp_path, marks_work):
    """Paused while the job imports torch and loads (a million objects walked again and again otherwise), back on for
    the work, and what was loaded frozen out of later collections; a job that never marks its work gets it back at
    its end."""
    args = [str(tmp_path / "job.log"), "works" if marks_work else "loads only"]
    out = subprocess.run([sys.executable, "-c", COLLECTOR, *args], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["before"] and not seen["loading"] and seen["after"]
    assert seen["frozen_after"] > 0
    if marks_work:
        assert seen["working"] and seen["frozen_at_work_start"] > 0


def test_costs_add_up_per_rule_and_over_the_run(tmp_path):
    for name in ("a", "b"):
        run_job(tmp_path, "train_classifier", name, fixed=0.2)
    run_job(tmp_path, "summarize_results", "c", fixed=0.0)
    records = read_job_records(tmp_path)
    summary = cost_summary(records, cores=2)
    rules = summary["rules"]
    assert summary["jobs"] == 3 and rules["train_classifier"]["jobs"] == 2 and rules["summarize_results"]["jobs"] == 1
    for rule in rules.values():
        assert rule["job_s"] == pytest.approx(rule["fixed_s"] + rule["work_s"])
    assert rules["train_classifier"]["mean_fixed_s"] >= 0.2
    assert summary["job_s"] == pytest.approx(sum(r["job_s"] for r in rules.values()))
    # three jobs one after the other on a 2-core budget: at most half the cores busy
    assert summary["wall_s"] >= summary["job_s"] * 0.99
    assert 0 < summary["cores_busy"] <= 0.5 + 1e-6


def test_run_json_names_the_machine_and_is_kept_by_a_run_that_ran_nothing(tmp_path):
    # nothing ran: nothing written
    assert write_run_record(tmp_path, run_record(tmp_path, 2, Path(__file__).parent)) is None
    run_job(tmp_path, "train_classifier", "a")
    path = write_run_record(tmp_path, run_record(tmp_path, 2, Path(__file__).parent))
    assert path == tmp_path / RUN_RECORD
    record = read_json(path)
    assert record["jobs"] == 1 and record["complete"] and record["cores"] == 2
    assert len(record["commit"]) == 40 and record["packages"]["scikit-learn"]
    assert record["machine"]["cpu_model"] and record["machine"]["cpu_count"] >= 1
    stamp = path.stat().st_mtime_ns
    assert write_run_record(tmp_path, run_record(tmp_path, 2, Path(__file__).parent)) == path
    assert path.stat().st_mtime_ns == stamp  # the same jobs: the file is left as it was

    later = read_json(path)["last_job_end"]
    since = max(r["end"] for r in read_job_records(tmp_path)) + 1e-3
    assert run_record(tmp_path, 2, Path(__file__).parent, since=since) is None
    run_job(tmp_path, "summarize_results", "b")
    partial = run_record(tmp_path, 2, Path(__file__).parent, since=since)
    assert partial["jobs"] == 1 and not partial["complete"]  # a resumed run: its wall time is not from nothing
    assert partial["first_job_start"] >= later


def test_a_partial_rerun_keeps_the_last_run_from_nothing_on_record(tmp_path):
    from medxfer.benchmarkdoc import machine_line, minutes, wall_from_nothing

    here = Path(__file__).parent
    run_job(tmp_path, "train_classifier", "a")
    run_job(tmp_path, "train_classifier", "b")
    first = read_json(write_run_record(tmp_path, run_record(tmp_path, 2, here, config={"epochs": 4})))
    assert first["complete"] and first["jobs"] == 2 and "from_nothing" not in first

    for name in ("c", "d"):  # two re-runs of one job each, the second with another config
        since = max(r["end"] for r in read_job_records(tmp_path)) + 1e-3
        run_job(tmp_path, "summarize_results", name)
        config = {"epochs": 4 if name == "c" else 12}
        record = read_json(write_run_record(tmp_path, run_record(tmp_path, 2, here, since=since, config=config)))
        assert record["jobs"] == 1 and not record["complete"]
        kept = record["from_nothing"]
        assert (kept["jobs"], kept["wall_s"], kept["date"]) == (2, first["wall_s"], first["date"])
        line = machine_line(record)
        assert "(the last invocation only (a partial re-run))" in line and f"finished {first['date']}" in line
        assert ("the same config" if name == "c" else "another config") in line
        assert wall_from_nothing(record) == minutes(first["wall_s"])

    (tmp_path / RUN_RECORD).unlink()  # a whole new run from nothing replaces the record and what it kept
    again = read_json(write_run_record(tmp_path, run_record(tmp_path, 2, here)))
    assert again["complete"] and again["jobs"] == 4 and "from_nothing" not in again
    assert wall_from_nothing(again) == minutes(again["wall_s"])


def test_cost_command_prints_json_with_its_limits(tmp_path):
    run_job(tmp_path, "train_classifier", "a", fixed=0.5)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "workflow_cost.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path), "--cores", "1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["rules"]["train_classifier"]["jobs"] == 1
    assert summary["limits"]["fixed_share_ok"] is False  # half a second of sleep against 0.3 s of work
    empty = subprocess.run([sys.executable, str(script), str(tmp_path / "none")], capture_output=True, text=True)
    assert empty.returncode != 0 and "no job timing records" in empty.stderr
