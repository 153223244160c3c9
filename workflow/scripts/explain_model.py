"""Snakemake adapter: Grad-CAM, Grad-CAM++ and LIME overlays and their faithfulness for each model of one run."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in every job env

from medxfer.explain import explain_model
from medxfer.log import logged

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
