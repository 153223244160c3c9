"""Snakemake adapter: supervised in-domain pretraining of one architecture."""

from pathlib import Path

from medxfer.log import logged
from medxfer.train import pretrain_model

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged(sm.log[0]):
    pretrain_model(
        Path(sm.input.manifest),
        Path(sm.input.images),
        sm.wildcards.arch,
        sm.params.train,
        Path(sm.output.weights).parent,
        threads=sm.threads,
        seed=sm.params.seed,
        device=sm.params.device,
        log_path=Path(sm.log[0]),
    )
