"""Snakemake adapter: generate one demo data set under data/demo/."""

from pathlib import Path

from medxfer import synth
from medxfer.log import logged

sm = snakemake  # noqa: F821 - injected by Snakemake
generators = {"xray_source": synth.synthesize_xray_source, "mura": synth.synthesize_mura, "ct": synth.synthesize_ct}
with logged(sm.log[0]):
    demo = sm.params.demo
    generators[sm.wildcards.demo_set](Path(sm.output[0]), demo["n"], demo["size"], demo["seed"])
