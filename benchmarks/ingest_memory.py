"""Peak memory of decoding one very large image the way ingest and the cache do, each in a fresh subprocess.

    .venv/bin/python benchmarks/ingest_memory.py --side 12000 --size 64

Writes a side x side 16-bit grey PNG and an 8-bit grey JPEG (smooth gradients) to a temp dir, then for each runs
`load_image(path, "xray", [], size)` (what ingest and cache_images call per file) and, for comparison,
`read_image(path, "xray")` (native size) in a child process. Each child reports its peak resident set
(resource.getrusage ru_maxrss) after importing medxfer and after decoding; `decode_mb` is the difference. The
images are written by another subprocess: a child inherits its parent's ru_maxrss, so the parent stays small.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

IMAGES = {"png16": "deep.png", "jpeg8": "plain.jpg"}
CHILD = """
import json, resource, sys, time
from medxfer.imaging import load_image, read_image
path, call, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
image = load_image(path, "xray", [], size) if call == "load_image" else read_image(path, "xray")
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"shape": list(image.shape), "seconds": round(seconds, 2), "before_kb": before, "after_kb": after}))
"""


def write_images(folder: Path, side: int) -> None:
    """A 16-bit PNG and an 8-bit JPEG of side x side smooth gradients (they compress fast and small)."""
    ramp = np.arange(side, dtype=np.uint16)
    deep = ramp[None, :] * np.uint16(3) + ramp[:, None] * np.uint16(2)
    Image.fromarray(deep).save(folder / IMAGES["png16"], compress_level=1)
    Image.fromarray((deep >> 8).astype(np.uint8)).save(folder / IMAGES["jpeg8"], quality=90)


def measure(path: Path, call: str, size: int) -> dict:
    """One decode in a fresh interpreter, so nothing else counts towards its peak."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), call, str(size)], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1]}
    result = json.loads(out.stdout)
    result["decode_mb"] = round((result["after_kb"] - result["before_kb"]) / 1024)
    result["peak_mb"] = round(result.pop("after_kb") / 1024)
    result["interpreter_mb"] = round(result.pop("before_kb") / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=12000)
    parser.add_argument("--size", type=int, default=64, help="the data set's cached image side")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # internal: the writer subprocess
    args = parser.parse_args()
    if args.write:
        return write_images(args.write, args.side)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--write", tmp, "--side", str(args.side)], check=True)
        written = time.perf_counter() - start
        paths = {kind: Path(tmp) / name for kind, name in IMAGES.items()}
        results = {
            kind: {call: measure(path, call, args.size) for call in ("load_image", "read_image")}
            | {"file_mb": round(path.stat().st_size / 2**20, 1)}
            for kind, path in paths.items()
        }
    report = {"side": args.side, "size": args.size, "write_seconds": round(written, 1), "images": results}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
