"""Snakemake adapter: convert one architecture's packaged ImageNet weights to timm's key names."""

from pathlib import Path

from medxfer.log import get_logger, logged
from medxfer.weights import import_packaged, packaged_file

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    arch = sm.wildcards.arch
    import_packaged(arch, Path(sm.output[0]))
    get_logger("medxfer.weights", sm.log[0]).info("%s: %s -> %s", arch, packaged_file(arch), sm.output[0])
