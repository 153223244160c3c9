"""Snakemake adapter: ingest one raw data set into manifest.csv + quarantine.csv + duplicates.csv."""

from pathlib import Path

from medxfer.ingest import ingest_dataset
from medxfer.log import get_logger, logged

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    ingest_dataset(
        sm.wildcards.dataset,
        sm.params.dataset,
        Path(sm.output.manifest),
        Path(sm.output.quarantine),
        seed=sm.params.seed,
        log=get_logger("medxfer.ingest", sm.log[0]),
        duplicates_path=Path(sm.output.duplicates),
    )
