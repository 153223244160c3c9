"""Snakemake adapter: fail if a target test image is an exact copy of a pretraining source image."""

from pathlib import Path

from medxfer.ingest import check_source_overlap
from medxfer.log import logged

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    sources = {name: Path(path) for name, path in zip(sm.params.sources, sm.input.sources, strict=True)}
    check_source_overlap(Path(sm.input.target), sources, Path(sm.output[0]))
