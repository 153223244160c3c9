"""Snakemake adapter: fine-tune one architecture from one init on one target."""

from pathlib import Path

from medxfer.log import logged
from medxfer.train import finetune_model

sm = snakemake  # noqa: F821 - injected by Snakemake

init, weights = sm.wildcards.init, sm.input.get("weights")
# imagenet: the weights file itself; indomain: the pretrain checkpoint folder; scratch: nothing
init_path = None if weights is None else Path(weights).parent if init == "indomain" else Path(weights)
with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    finetune_model(
        Path(sm.input.manifest),
        Path(sm.input.images),
        sm.wildcards.arch,
        init,
        sm.params.train,
        Path(sm.output.weights).parent,
        init_path=init_path,
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
