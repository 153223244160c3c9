"""Snakemake adapter: supervised in-domain pretraining of one architecture."""

from pathlib import Path

from medxfer.log import logged
from medxfer.train import pretrain_model

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    pretrain_model(
        sm.input.manifest,  # one path, or a list of pooled source sets
        sm.input.images,
        sm.wildcards.arch,
        sm.params.train,
        Path(sm.output.weights).parent,
        threads=sm.threads,
        seed=sm.params.seed,
        device=sm.params.device,
        log_path=Path(sm.log[0]),
        resume_dir=Path(sm.params.resume),
        resume_root=Path(sm.params.resume_root),
    )
