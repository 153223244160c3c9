"""Snakemake adapter: fuse the feature matrices of several fine-tuned models."""

from pathlib import Path

from medxfer.fusion import fuse_features
from medxfer.log import get_logger, logged

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged(sm.log[0]):
    report = fuse_features(
        [Path(p) for p in sm.input.features],
        Path(sm.output.features),
        Path(sm.output.report),
        standardize=sm.params.fusion["standardize"],
        pca_components=sm.params.fusion["pca_components"],
        seed=sm.params.seed,
    )
    get_logger("medxfer.fusion", sm.log[0]).info("fused %s -> %s", report["concat_dim"], report["fused_dim"])
