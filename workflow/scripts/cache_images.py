"""Snakemake adapter: decode a data set once into a uint8 .npy cache."""

from pathlib import Path

from medxfer.cache import cache_images
from medxfer.log import get_logger, logged

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    cache_images(
        sm.params.dataset,
        Path(sm.input.manifest),
        Path(sm.output.images),
        threads=sm.threads,
        log=get_logger("medxfer.cache", sm.log[0]),
    )
