"""Snakemake adapter: fine-tune one architecture from one init on one target."""

from pathlib import Path

from medxfer.jobs import init_path
from medxfer.log import logged
from medxfer.train import finetune_model

sm = snakemake  # noqa: F821 - injected by Snakemake

init = sm.wildcards.init
with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    finetune_model(
        Path(sm.input.manifest),
        Path(sm.input.images),
        sm.wildcards.arch,
        init,
        sm.params.train,
        Path(sm.output.weights).parent,
        init_path=init_path(init, sm.input.get("weights")),
        threads=sm.threads,
        seed=sm.params.seed,
        device=sm.params.device,
        log_path=Path(sm.log[0]),
        resume_dir=Path(sm.params.resume),
        resume_root=Path(sm.params.resume_root),
        decision=sm.params.decision,
        target=sm.wildcards.target,
        run=sm.params.run,
    )
