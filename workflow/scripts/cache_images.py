"""Snakemake adapter: decode a data set once into a uint8 .npy cache."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in every job env

from medxfer.cache import cache_images
from medxfer.log import get_logger, logged

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    cache_images(
        sm.params.dataset,
        Path(sm.input.manifest),
        Path(sm.output.images),
        threads=sm.threads,
        log=get_logger("medxfer.cache", sm.log[0]),
    )
