"""Every rule's script: the job's body is its stage in medxfer.stages, which `medxfer <stage>` runs too."""

from medxfer.stages import run

run(snakemake)  # noqa: F821 - injected by Snakemake
