"""Where a finished run's time went, per rule: job count, summed job time, each job's fixed cost (interpreter start,
imports, loading before the first useful step) against its work, CPU seconds, and how busy the cores were.

    .venv/bin/python benchmarks/workflow_cost.py results            # the demo's results folder
    .venv/bin/python benchmarks/workflow_cost.py results-ct --cores 2

Reads the timing record every job leaves as the last line of its log (<RESULTS>/logs/**); nothing is re-run. The
cores default to the ones the run's report/run.json names, else this machine's. Limits checked in the same output:
fixed cost <= 10 % of the summed job time, cores busy >= 85 % of the wall time. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from medxfer.io import read_json  # noqa: E402
from medxfer.runrecord import RUN_RECORD, cost_summary, read_job_records, rounded  # noqa: E402

MAX_FIXED_SHARE = 0.10
MIN_CORES_BUSY = 0.85


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a finished run's results folder (config key `results`)")
    parser.add_argument("--cores", type=int, help="cores the run had (default: from report/run.json)")
    args = parser.parse_args()
    records = read_job_records(args.results)
    if not records:
        parser.error(f"{args.results}: no job timing records under {args.results / 'logs'}")
    cores = args.cores
    run_json = args.results / RUN_RECORD
    if cores is None and run_json.exists():
        cores = read_json(run_json).get("cores")
    summary = cost_summary(records, cores)
    summary["limits"] = {
        "max_fixed_share": MAX_FIXED_SHARE,
        "fixed_share_ok": summary["fixed_share"] <= MAX_FIXED_SHARE,
        "min_cores_busy": MIN_CORES_BUSY,
        "cores_busy_ok": summary["cores_busy"] >= MIN_CORES_BUSY,
    }
    print(json.dumps(rounded(summary), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
