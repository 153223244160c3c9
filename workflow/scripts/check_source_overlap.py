"""Snakemake adapter: fail if a target test image is an exact copy of a pretraining source image."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in every job env

from medxfer.ingest import check_source_overlap
from medxfer.log import logged

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    sources = {name: Path(path) for name, path in zip(sm.params.sources, sm.input.sources, strict=True)}
    check_source_overlap(Path(sm.input.target), sources, Path(sm.output[0]))
