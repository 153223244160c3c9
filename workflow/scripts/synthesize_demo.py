"""Snakemake adapter: generate one demo data set under data/demo/."""

from pathlib import Path

from medxfer.demo import synthesize_ct, synthesize_mura, synthesize_xray_source
from medxfer.fingerprint import write_fingerprint
from medxfer.log import logged

sm = snakemake  # noqa: F821 - injected by Snakemake

generators = {"xray_source": synthesize_xray_source, "mura": synthesize_mura, "ct": synthesize_ct}
with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    demo = sm.params.demo
    generators[sm.wildcards.demo_set](Path(sm.output.root), demo["n"], demo["size"], demo["seed"])
    write_fingerprint(sm.output.root, sm.output.stamp, demo_set=sm.wildcards.demo_set, **demo)
