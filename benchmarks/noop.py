"""Wall time of a no-op `snakemake` (everything up to date) and where it goes (`python -X importtime`).

    .venv/bin/python benchmarks/noop.py                      # the repo's own results/ (after `make demo`)
    .venv/bin/python benchmarks/noop.py --directory /tmp/run # any finished run dir (its config/config.yaml)
    .venv/bin/python benchmarks/noop.py --tiny               # first runs tests/workflow/tiny.yaml in a temp dir

Measured in the same run: the bare start-up of the Snakemake CLI (`snakemake --version`), so the JSON also says
how much of the no-op is DAG work rather than Python start-up. Target: no-op wall time <= 2 s on the default
config. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
TARGET_S = 2.0
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$")


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - start, result


def top_imports(stderr: str, n: int) -> tuple[float, list[dict]]:
    """Total import time and the top-level modules (not their sub-imports) with the largest cumulative time."""
    rows = []
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match and not match[3]:
            rows.append({"module": match[4], "cumulative_s": int(match[2]) / 1e6})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return sum(r["cumulative_s"] for r in rows), [r | {"cumulative_s": round(r["cumulative_s"], 3)} for r in rows[:n]]


def build_tiny(workdir: Path) -> None:
    (workdir / "config").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "workflow" / "tiny.yaml", workdir / "config" / "config.yaml")
    subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", "--quiet"], check=True)


def measure(workdir: Path, repeat: int, n_imports: int) -> dict:
    noop_cmd = [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2"]
    runs, outputs = [], ""
    for _ in range(repeat):
        wall, result = timed(noop_cmd, workdir)
        outputs = result.stdout + result.stderr
        if result.returncode != 0 or "Nothing to be done" not in outputs:
            raise SystemExit(f"not a no-op in {workdir} (run the workflow to completion first):\n{outputs[-3000:]}")
        runs.append(wall)
    startup = min(timed([sys.executable, "-m", "snakemake", "--version"], workdir)[0] for _ in range(repeat))
    _, traced = timed([sys.executable, "-X", "importtime", *noop_cmd[1:]], workdir)
    total, top = top_imports(traced.stderr, n_imports)
    _, cli_only = timed([sys.executable, "-X", "importtime", "-c", "import snakemake.cli"], workdir)
    cli_total, cli_top = top_imports(cli_only.stderr, n_imports)
    wall = min(runs)
    return {
        "directory": str(workdir),
        "noop_wall_s": round(wall, 3),
        "runs_s": [round(r, 3) for r in runs],
        "target_s": TARGET_S,
        "ratio_to_target": round(wall / TARGET_S, 3),
        "meets_target": wall <= TARGET_S,
        "snakemake_version_startup_s": round(startup, 3),
        "noop_over_startup": round(wall / startup, 3),
        "imports_in_noop_s": round(total, 3),
        "top_imports_in_noop": top,
        "imports_of_snakemake_cli_s": round(cli_total, 3),
        "top_imports_of_snakemake_cli": cli_top,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", type=Path, default=REPO, help="a finished run dir (default: this repo)")
    parser.add_argument("--tiny", action="store_true", help="build the tiny config in a temp dir first (minutes)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many no-op runs")
    parser.add_argument("--imports", type=int, default=10, help="how many top imports to list")
    args = parser.parse_args(argv)
    if args.tiny:
        with tempfile.TemporaryDirectory() as tmp:
            build_tiny(Path(tmp) / "run")
            result = measure(Path(tmp) / "run", args.repeat, args.imports) | {"config": "tests/workflow/tiny.yaml"}
    else:
        workdir = args.directory.resolve()
        result = measure(workdir, args.repeat, args.imports) | {"config": str(workdir / "config" / "config.yaml")}
    json.dump(result, sys.stdout, indent=2)
    print()
    return result


if __name__ == "__main__":
    main()
