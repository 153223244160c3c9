"""Snakemake adapter: one summary table over every metrics.json, with intervals and the paired comparison."""

from pathlib import Path

from medxfer.log import logged
from medxfer.report import summarize_results

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    summarize_results(
        [Path(p) for p in [*sm.input.finetune, *sm.input.classify]],
        Path(sm.output.summary),
        Path(sm.output.metrics),
        Path(sm.output.table),
        seed=sm.params.seed,
        out_headline=Path(sm.output.headline),
        out_html=Path(sm.output.html),
        out_benchmark_md=Path(sm.output.benchmark_md),
        out_benchmark_csv=Path(sm.output.benchmark_csv),
        report=sm.params.report,
        # in the order of finetune.targets, as the rule lists them; no overlap checks without in-domain pretraining
        overlap_paths=dict(zip(sm.params.targets, map(Path, sm.input.overlap), strict=True))
        if sm.input.overlap
        else {},
        manifest_paths=dict(zip(sm.params.targets, map(Path, sm.input.manifests), strict=True)),
    )
