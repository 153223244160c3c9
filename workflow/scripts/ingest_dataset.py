"""Snakemake adapter: ingest one raw data set into manifest.csv + quarantine.csv + duplicates.csv."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in every job env

from medxfer.ingest import ingest_dataset
from medxfer.log import get_logger, logged

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
