"""Snakemake adapter: fuse the feature matrices of several fine-tuned models."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in every job env

from medxfer.fusion import fuse_features
from medxfer.log import get_logger, logged

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    report = fuse_features(
        [Path(p) for p in sm.input.features],
        Path(sm.output.features),
        Path(sm.output.report),
        standardize=sm.params.fusion["standardize"],
        pca_components=sm.params.fusion["pca_components"],
        seed=sm.params.seed,
        select_k=sm.params.fusion["select_k"],
    )
    get_logger("medxfer.fusion", sm.log[0]).info("fused %s -> %s", report["concat_dim"], report["fused_dim"])
