"""Snakemake adapter: pooled deep features of one fine-tuned model for every split."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in every job env

from medxfer.features import extract_features
from medxfer.log import logged

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    extract_features(
        Path(sm.input.weights).parent,
        Path(sm.input.manifest),
        Path(sm.input.images),
        Path(sm.output.features),
        batch_size=sm.params.batch_size,
        threads=sm.threads,
        device=sm.params.device,
        stages=sm.params.stages,
        log_path=Path(sm.log[0]),
    )
