"""Snakemake adapter: pooled deep features of one fine-tuned model for every split."""

from pathlib import Path

from medxfer.features import extract_features
from medxfer.log import logged

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged(sm.log[0]):
    extract_features(
        Path(sm.input.weights).parent,
        Path(sm.input.manifest),
        Path(sm.input.images),
        Path(sm.output.features),
        batch_size=sm.params.batch_size,
        threads=sm.threads,
        device=sm.params.device,
        log_path=Path(sm.log[0]),
    )
