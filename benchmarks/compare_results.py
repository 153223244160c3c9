"""Do two runs give the same numbers? Compares every metrics.json and report/benchmark.csv of two results folders.

    .venv/bin/python benchmarks/compare_results.py RESULTS_A RESULTS_B [--ignore-key identity]

Files pair up by the identity they record, so runs with different folder layouts compare (leave out path-valued keys
such as `features` with --ignore-key). Prints JSON: how many files were compared, which differ and where. Timings
(benchmark.csv's train_seconds) and the keys given with --ignore-key are left out, so a change that only adds
metadata or runs faster still compares equal.
Exit code 1 when a number differs or a file is missing on one side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

TIMING_COLUMNS = ["train_seconds"]


def _strip(value: Any, ignored: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v, ignored) for k, v in value.items() if k not in ignored}
    if isinstance(value, list):
        return [_strip(v, ignored) for v in value]
    return value


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}.{key}: only in {'b' if key not in a else 'a'}"
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{where}.{key}")
    return f"{where or '<top>'}: {a!r} != {b!r}"[:300]


def _metrics_files(root: Path) -> dict[str, Path]:
    """Every metrics.json of this run (not of other runs kept inside it, like results/benchmark-ct in results/), keyed
    by the identity it records (medxfer.identity), else by its path: two layouts of the same results still pair up."""
    nested = {p.parent.parent for p in root.rglob("report/run.json")} - {root}
    files = {}
    for path in root.rglob("metrics.json"):
        if any(n in path.parents for n in nested):
            continue
        identity = json.loads(path.read_text()).get("identity")
        files[json.dumps(identity, sort_keys=True) if identity else str(path.relative_to(root))] = path
    return files


def compare(a: Path, b: Path, ignored: set[str]) -> dict[str, Any]:
    files_a, files_b = _metrics_files(a), _metrics_files(b)
    differ = {}
    for key in sorted(files_a.keys() & files_b.keys()):
        left = _strip(json.loads(files_a[key].read_text()), ignored)
        right = _strip(json.loads(files_b[key].read_text()), ignored)
        if left != right:
            differ[str(files_a[key].relative_to(a))] = _first_difference(left, right)
    result: dict[str, Any] = {
        "metrics_compared": len(files_a.keys() & files_b.keys()),
        "metrics_differ": differ,
        "only_in_a": sorted(str(files_a[k].relative_to(a)) for k in files_a.keys() - files_b.keys()),
        "only_in_b": sorted(str(files_b[k].relative_to(b)) for k in files_b.keys() - files_a.keys()),
        "ignored_keys": sorted(ignored),
    }
    bench = Path("report", "benchmark.csv")
    if (a / bench).is_file() and (b / bench).is_file():
        left, right = (pd.read_csv(root / bench).drop(columns=TIMING_COLUMNS, errors="ignore") for root in (a, b))
        result["benchmark_csv_equal"] = left.equals(right)
        result["benchmark_csv_ignored_columns"] = TIMING_COLUMNS
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--ignore-key", action="append", default=[], help="a metrics.json key to leave out, any depth")
    args = parser.parse_args()
    result = compare(args.a, args.b, set(args.ignore_key))
    print(json.dumps(result, indent=2))
    same = not (result["metrics_differ"] or result["only_in_a"] or result["only_in_b"])
    return 0 if same and result.get("benchmark_csv_equal", True) else 1


if __name__ == "__main__":
    sys.exit(main())
