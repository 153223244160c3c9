"""Snakemake adapter: pooled deep features of each fine-tuned model of one run, then their fusion."""

from pathlib import Path

from medxfer.features import extract_features
from medxfer.fusion import fuse_features
from medxfer.log import get_logger, logged

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    features = [Path(p) for p in sm.output.features]
    extract_features(
        [Path(p).parent for p in sm.input.weights],
        Path(sm.input.manifest),
        Path(sm.input.images),
        features,
        batch_size=sm.params.batch_size,
        threads=sm.threads,
        device=sm.params.device,
        stages=sm.params.stages,
        log_path=Path(sm.log[0]),
    )
    report = fuse_features(
        features,
        Path(sm.output.fused),
        Path(sm.output.report),
        standardize=sm.params.fusion["standardize"],
        pca_components=sm.params.fusion["pca_components"],
        seed=sm.params.seed,
        select_k=sm.params.fusion["select_k"],
    )
    get_logger("medxfer.fusion", sm.log[0]).info("fused %s -> %s", report["concat_dim"], report["fused_dim"])
