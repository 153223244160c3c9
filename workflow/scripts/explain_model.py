"""Snakemake adapter: Grad-CAM and LIME overlays for one fine-tuned model."""

from pathlib import Path

from medxfer.explain import explain_model
from medxfer.log import logged

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged(sm.log[0]):
    explain_model(
        Path(sm.input.weights).parent,
        Path(sm.input.manifest),
        Path(sm.input.images),
        Path(sm.output[0]),
        methods=sm.params.explain["methods"],
        n_images=sm.params.explain["n_images"],
        lime_samples=sm.params.explain["lime_samples"],
        seed=sm.params.seed,
        threads=sm.threads,
        log_path=Path(sm.log[0]),
    )
