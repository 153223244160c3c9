"""Snakemake adapter: fine-tune one architecture from one init on one target."""

from pathlib import Path

from medxfer.log import logged
from medxfer.train import finetune_model

sm = snakemake  # noqa: F821 - injected by Snakemake
init = sm.wildcards.init
init_path = {
    "scratch": None,
    "imagenet": sm.input.get("weights"),
    "indomain": Path(sm.input.get("weights")).parent if init == "indomain" else None,
}[init]
with logged(sm.log[0]):
    finetune_model(
        Path(sm.input.manifest),
        Path(sm.input.images),
        sm.wildcards.arch,
        init,
        sm.params.train,
        Path(sm.output.weights).parent,
        init_path=Path(init_path) if init_path else None,
        threads=sm.threads,
        seed=sm.params.seed,
        device=sm.params.device,
        log_path=Path(sm.log[0]),
    )
