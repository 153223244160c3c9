"""Snakemake adapter: Grad-CAM, Grad-CAM++ and LIME overlays and their faithfulness for each model of one run."""

from pathlib import Path

from medxfer.explain import explain_model
from medxfer.log import logged

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    for weights, folder, faithfulness in zip(sm.input.weights, sm.output.folders, sm.output.faithfulness, strict=True):
        explain_model(
            Path(weights).parent,
            Path(sm.input.manifest),
            Path(sm.input.images),
            Path(folder),
            sm.params.explain,
            seed=sm.params.seed,
            threads=sm.threads,
            device=sm.params.device,
            log_path=Path(sm.log[0]),
            faithfulness_path=Path(faithfulness),
        )
