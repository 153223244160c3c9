"""Snakemake adapter: the CNNs and the best fused classifier of one target/init on perturbed test images."""

from pathlib import Path

from medxfer.log import logged
from medxfer.robustness import assess_robustness

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    assess_robustness(
        [Path(p).parent for p in sm.input.weights],
        [Path(p) for p in sm.input.features],
        [Path(p) for p in sm.input.classifiers],
        Path(sm.input.manifest),
        Path(sm.input.images),
        sm.params.dataset,
        Path(sm.output.table),
        Path(sm.output.plot),
        perturbations=sm.params.robustness["perturbations"],
        severities=sm.params.robustness["severities"],
        fusion=sm.params.fusion,
        stages=sm.params.features["stages"],
        batch_size=sm.params.features["batch_size"],
        seed=sm.params.seed,
        threads=sm.threads,
        device=sm.params.device,
        log_path=Path(sm.log[0]),
    )
