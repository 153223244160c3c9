"""Snakemake adapter: convert one architecture's packaged ImageNet weights to timm's key names."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
# scriptdir is workflow/rules/../scripts: resolve the "..", else parents[1] is workflow/rules
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in any job env

from medxfer.log import get_logger, logged
from medxfer.weights import import_packaged, packaged_file

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    arch = sm.wildcards.arch
    import_packaged(arch, Path(sm.output[0]))
    get_logger("medxfer.weights", sm.log[0]).info("%s: %s -> %s", arch, packaged_file(arch), sm.output[0])
