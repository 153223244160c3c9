"""Snakemake adapter: Grad-CAM, Grad-CAM++ and LIME overlays and their faithfulness for one fine-tuned model."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in every job env

from medxfer.explain import explain_model
from medxfer.log import logged

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    explain_model(
        Path(sm.input.weights).parent,
        Path(sm.input.manifest),
        Path(sm.input.images),
        Path(sm.output.folder),
        methods=sm.params.explain["methods"],
        n_images=sm.params.explain["n_images"],
        lime_samples=sm.params.explain["lime_samples"],
        seed=sm.params.seed,
        threads=sm.threads,
        log_path=Path(sm.log[0]),
        n_faithfulness=sm.params.explain["n_faithfulness"],
        lime_segments=sm.params.explain["lime_segments"],
        steps=sm.params.explain["deletion_steps"],
        faithfulness_path=Path(sm.output.faithfulness),
    )
