"""What a run cost and where it ran: read the jobs' timing records (the last line of each rule's log, written by
medxfer.log.logged) into per-rule costs, and write report/run.json. Light on purpose: the Snakefile's onsuccess
handler calls it, so it must not import torch or sklearn."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from medxfer import paths
from medxfer.io import read_json, write_json
from medxfer.log import JOB_RECORD_TAG

RUN_RECORD = Path(paths.RUN_RECORD)
LOGS = paths.LOGS
# The packages whose versions decide the numbers; the rest follow from pyproject.toml's pins.
PACKAGES = (
    "medxfer",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "scikit-learn",
    "scipy",
    "pandas",
    "skops",
    "grad-cam",
    "lime",
    "pydicom",
    "snakemake",
    "dvc",
)
# CPU flags that decide which kernels numpy and torch run (the same job ran twice as slow on an AVX2-only host).
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "neon")


def read_job_records(results: str | os.PathLike) -> list[dict[str, Any]]:
    """Every job's timing record under `<results>/logs` (one per log file: its last record line)."""
    records = []
    for log in sorted(Path(results, LOGS).rglob("*.log")):
        last = None
        with open(log, errors="replace") as fh:
            for line in fh:
                if line.startswith(JOB_RECORD_TAG):
                    last = line
        if last is not None:
            records.append(json.loads(last[len(JOB_RECORD_TAG) :]) | {"log": str(log.relative_to(results))})
    return records


def job_costs(record: dict[str, Any]) -> dict[str, float]:
    """A job's seconds: all of it (process start to end), fixed (start-up, imports, loading) and work."""
    total = record["end"] - record["process_start"]
    fixed = record["work_start"] - record["process_start"]
    return {"job_s": total, "fixed_s": fixed, "work_s": total - fixed, "cpu_s": record["cpu_seconds"]}


def cost_summary(records: Sequence[dict[str, Any]], cores: int | None) -> dict[str, Any]:
    """Per rule: jobs, summed job time, fixed cost against work, CPU seconds, torch threads; for the run: wall time
    from the first job's start to the last job's end and how busy `cores` cores were over it."""
    if not records:
        return {"jobs": 0, "rules": {}}
    rules: dict[str, dict[str, Any]] = {}
    for record in records:
        costs = job_costs(record)
        rule = rules.setdefault(
            record["rule"], {"jobs": 0, "job_s": 0.0, "fixed_s": 0.0, "work_s": 0.0, "cpu_s": 0.0, "threads": set()}
        )
        rule["jobs"] += 1
        for key, value in costs.items():
            rule[key] += value
        rule["threads"].add(record.get("torch_threads", record.get("threads")))
    cores = cores or os.cpu_count() or 1
    start = min(r["process_start"] for r in records)
    end = max(r["end"] for r in records)
    wall = end - start
    job_s = sum(r["job_s"] for r in rules.values())
    fixed_s = sum(r["fixed_s"] for r in rules.values())
    cpu_s = sum(r["cpu_s"] for r in rules.values())
    for rule in rules.values():
        rule["threads"] = sorted(t for t in rule["threads"] if t is not None)
        rule["fixed_share"] = rule["fixed_s"] / rule["job_s"] if rule["job_s"] else 0.0
        rule["mean_fixed_s"] = rule["fixed_s"] / rule["jobs"]
    return {
        "jobs": len(records),
        "failed_jobs": sum(r.get("status") != "ok" for r in records),
        "first_job_start": _iso(start),
        "last_job_end": _iso(end),
        "wall_s": wall,
        "cores": cores,
        "job_s": job_s,
        "fixed_s": fixed_s,
        "fixed_share": fixed_s / job_s if job_s else 0.0,
        "cpu_s": cpu_s,
        # CPU seconds used over the core-seconds the run had: 1.0 = every core busy from first job to last
        "cores_busy": cpu_s / (wall * cores) if wall > 0 else 0.0,
        "rules": dict(sorted(rules.items(), key=lambda item: -item[1]["job_s"])),
    }


def rounded(value: Any, digits: int = 3) -> Any:
    """Floats rounded for reading; the records keep full precision."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags (/proc/cpuinfo; the platform's guess elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags |= set(value.split())
    except OSError:
        pass
    return model, flags


def machine() -> dict[str, Any]:
    """CPU model and SIMD flags, cores, OS and Python: enough to tell whether two runs' timings compare."""
    model, flags = cpu_info()
    return {
        "host": platform.node(),
        "cpu_model": model,
        "cpu_flags": [f for f in SIMD_FLAGS if f in flags],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(checkout: str | os.PathLike) -> dict[str, Any]:
    """The workflow checkout's commit and whether files tracked by git differ from it."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def run_record(
    results: str | os.PathLike,
    cores: int | None,
    checkout: str | os.PathLike,
    since: float | None = None,
    config: dict[str, Any] | None = None,
    configfiles: Sequence[str] = (),
) -> dict[str, Any] | None:
    """The record of the jobs that ran since `since` (epoch seconds; all jobs when None), or None if none did;
    with the validated `config`, its digest and the config files it came from."""
    records = read_job_records(results)
    ran = [r for r in records if since is None or r["process_start"] >= since]
    if not ran:
        return None
    summary = cost_summary(ran, cores)
    threads = {rule: costs["threads"] for rule, costs in summary["rules"].items()}
    capability = sorted({r["torch_cpu_capability"] for r in ran if r.get("torch_cpu_capability")})
    digest = _digest(sorted(ran, key=lambda r: r["log"]))
    return {
        "date": summary["last_job_end"],
        **git_commit(checkout),
        "configfiles": [_relative(f, checkout) for f in configfiles],
        "config_sha256": None if config is None else _digest(config),
        "config": None if config is None else json.loads(json.dumps(config, default=str)),  # ablations diff these
        "machine": machine() | {"torch_cpu_capability": capability},
        "torch_threads": {rule: t for rule, t in threads.items() if t},
        "packages": package_versions(),
        # every job in the results folder ran in this invocation: the wall time is the run's from nothing
        "complete": len(ran) == len(records),
        "jobs_digest": digest,
        **rounded(summary),
    }


# What a partial re-run keeps of the last run from nothing: its cost and what made it (docs cite both).
FROM_NOTHING = (
    *("date", "commit", "dirty", "configfiles", "config_sha256", "config"),
    *("cores", "jobs", "wall_s", "job_s", "fixed_share", "cores_busy"),
)


def write_run_record(results: str | os.PathLike, record: dict[str, Any] | None) -> Path | None:
    """Write `record` (from run_record) as `<results>/report/run.json`; a run that ran nothing (None) or the same
    jobs again keeps the file as it was. A partial re-run (a resumed run, or only the stages a change touched)
    carries the last run from nothing along under `from_nothing`, so its cost is not lost to the re-run's."""
    path = Path(results, RUN_RECORD)
    if record is None:
        return None
    previous = _previous(path)
    if previous.get("jobs_digest") == record["jobs_digest"]:
        return path
    if not record["complete"]:
        kept = {k: previous[k] for k in FROM_NOTHING if k in previous} if previous.get("complete") else None
        kept = kept or previous.get("from_nothing")
        record = record | ({"from_nothing": kept} if kept else {})
    write_json(path, record)
    return path


def _previous(path: Path) -> dict[str, Any]:
    """The run.json there is, or {} (none yet, or unreadable: then it is replaced)."""
    try:
        previous = read_json(path)
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def _relative(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """A config file as the user named it from the checkout: relative when inside it (no machine paths in docs)."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")
