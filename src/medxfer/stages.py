"""Every workflow job's body, once: the rules' one script (workflow/scripts/run_stage.py) and `medxfer <stage>` both
call `run`, so a job and its command-line redo are the same code.

A job is what Snakemake hands a script: named `input`, `output` and `params`, `wildcards`, `threads`, `log` and its
`rule`. The command line builds the same object from medxfer.jobs (`Job`). Each stage imports its library lazily:
a classifier job never pays for torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from medxfer.log import get_logger, logged
from medxfer.sections import (
    BundleSection,
    ClassifySection,
    DecisionSection,
    ExplainSection,
    FeaturesSection,
    FinetuneTraining,
    FusionSection,
    PretrainTraining,
    RobustnessSection,
)

STAGES: dict[str, Callable[[Any], None]] = {}


def stage(func: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register a job body under its rule's name (the function's name)."""
    STAGES[func.__name__] = func
    return func


class Named(SimpleNamespace):
    """Named files or settings, read as Snakemake's own (attributes, `get`, `items`)."""

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def items(self) -> Iterable[tuple[str, Any]]:
        return vars(self).items()


@dataclass
class Job:
    """One workflow job, as the command line rebuilds it from the config and its wildcards."""

    rule: str
    input: Named
    output: Named
    params: Named
    wildcards: Named
    threads: int = 1
    log: list[str] = field(default_factory=list)


def run(job: Any) -> None:
    """Run the job's stage; with a log file, failures are appended to it and it ends with the job's timing record."""
    if job.rule not in STAGES:
        raise ValueError(f"no stage for rule '{job.rule}' (known: {sorted(STAGES)})")
    if not job.log:
        STAGES[job.rule](job)
        return
    with logged(job.log[0], job.rule, dict(job.wildcards.items()), job.threads):
        STAGES[job.rule](job)


def _log_path(job: Any) -> Path | None:
    return Path(job.log[0]) if job.log else None


def _logger(job: Any, name: str) -> Any:
    return get_logger(name, job.log[0] if job.log else None)


@stage
def synthesize_demo(job: Any) -> None:
    from medxfer import demo
    from medxfer.fingerprint import write_fingerprint

    settings = job.params.demo
    demo.GENERATORS[job.wildcards.demo_set](Path(job.output.root), settings["n"], settings["size"], settings["seed"])
    write_fingerprint(job.output.root, job.output.stamp, demo_set=job.wildcards.demo_set, **settings)


@stage
def ingest_dataset(job: Any) -> None:
    from medxfer.ingest import ingest_dataset as ingest

    ingest(
        job.wildcards.dataset,
        job.params.dataset,
        Path(job.output.manifest),
        Path(job.output.quarantine),
        seed=job.params.seed,
        log=_logger(job, "medxfer.ingest"),
        duplicates_path=Path(job.output.duplicates),
    )


@stage
def cache_images(job: Any) -> None:
    from medxfer.cache import cache_images as cache

    cache(
        job.params.dataset,
        Path(job.input.manifest),
        Path(job.output.images),
        threads=job.threads,
        log=_logger(job, "medxfer.cache"),
    )


@stage
def check_source_overlap(job: Any) -> None:
    from medxfer.ingest import check_source_overlap as check

    sources = {name: Path(path) for name, path in zip(job.params.sources, job.input.sources, strict=True)}
    check(Path(job.input.target), sources, Path(job.output.overlap), job.params.near_distance)


@stage
def import_imagenet_weights(job: Any) -> None:
    from medxfer.weights import import_packaged, packaged_file

    arch = job.wildcards.arch
    import_packaged(arch, Path(job.output.weights))
    _logger(job, "medxfer.weights").info("%s: %s -> %s", arch, packaged_file(arch), job.output.weights)


@stage
def pretrain_model(job: Any) -> None:
    from medxfer.train import pretrain_model as pretrain

    imagenet = job.input.get("weights")  # pretrain.init: imagenet

    pretrain(
        job.input.manifest,  # one path, or a list of pooled source sets
        job.input.images,
        job.wildcards.arch,
        PretrainTraining.from_config(job.params.train),
        Path(job.output.weights).parent,
        threads=job.threads,
        seed=job.params.seed,
        device=job.params.device,
        log_path=_log_path(job),
        resume_dir=Path(job.params.resume),
        resume_root=Path(job.params.resume_root),
        init_path=Path(imagenet) if imagenet else None,
    )


@stage
def finetune_model(job: Any) -> None:
    from medxfer.jobs import init_path
    from medxfer.train import finetune_model as finetune

    init = job.wildcards.init
    finetune(
        Path(job.input.manifest),
        Path(job.input.images),
        job.wildcards.arch,
        init,
        FinetuneTraining.from_config(job.params.train),
        Path(job.output.weights).parent,
        init_path=init_path(init, job.input.get("weights")),
        threads=job.threads,
        seed=job.params.seed,
        device=job.params.device,
        log_path=_log_path(job),
        resume_dir=Path(job.params.resume),
        resume_root=Path(job.params.resume_root),
        decision=DecisionSection.from_config({"threshold": job.params.decision}),
        target=job.wildcards.target,
        run=job.params.run,
        ordinal=job.params.ordinal,
    )


@stage
def extract_features(job: Any) -> None:
    from medxfer.features import extract_features as extract
    from medxfer.fusion import fuse_features

    features = [Path(p) for p in job.output.features]
    extract(
        [Path(p).parent for p in job.input.weights],
        Path(job.input.manifest),
        Path(job.input.images),
        features,
        FeaturesSection.from_config({"batch_size": job.params.batch_size, "stages": job.params.stages}),
        threads=job.threads,
        device=job.params.device,
        log_path=_log_path(job),
    )
    fusion = FusionSection.from_config(job.params.fusion)
    report = fuse_features(
        features, Path(job.output.fused), Path(job.output.report), fusion, job.params.seed, Path(job.output.transform)
    )
    _logger(job, "medxfer.fusion").info("fused %s -> %s", report["concat_dim"], report["fused_dim"])


@stage
def train_classifiers(job: Any) -> None:
    """Select (by CV on train+val), fit and test every classifier on each feature set of one run; outputs are listed
    classifier by classifier (the combiners last), feature set by feature set."""
    from medxfer.classify import train_run_classifiers

    train_run_classifiers(
        list(job.input.features),
        dict(job.output.items()),
        job.params.classifiers,
        job.params.feature_sets,
        job.params.members,
        log=_logger(job, "medxfer.classify"),
        seed=job.params.seed,
        threads=job.threads,
        decision=DecisionSection.from_config({"threshold": job.params.decision}),
        classify=ClassifySection.from_config({"pca_components": job.params.pca_components}),
    )


@stage
def explain_model(job: Any) -> None:
    from medxfer.explain import explain_model as explain

    explain(
        Path(job.input.weights).parent,
        Path(job.input.manifest),
        Path(job.input.images),
        Path(job.output.folder),
        ExplainSection.from_config(job.params.explain),
        seed=job.params.seed,
        threads=job.threads,
        device=job.params.device,
        log_path=_log_path(job),
        faithfulness_path=Path(job.output.faithfulness),
    )


@stage
def assess_robustness(job: Any) -> None:
    from medxfer.robustness import assess_robustness as assess

    assess(
        [Path(p).parent for p in job.input.weights],
        Path(job.input.fusion),
        [Path(p) for p in job.input.classifiers],
        Path(job.input.manifest),
        Path(job.input.images),
        job.params.dataset,
        Path(job.output.table),
        Path(job.output.plot),
        RobustnessSection.from_config(job.params.robustness),
        FeaturesSection.from_config(job.params.features),
        seed=job.params.seed,
        threads=job.threads,
        device=job.params.device,
        log_path=_log_path(job),
    )


@stage
def export_bundle(job: Any) -> None:
    from medxfer.bundle import export_bundle as export

    meta = export(
        [Path(p) for p in [*job.input.cnn, *job.input.classifiers]],
        [Path(p).parent for p in job.input.weights],
        Path(job.input.fusion),
        Path(job.input.manifest),
        job.params.dataset,
        Path(job.output.bundle),
        job.params.stages,
        BundleSection.from_config(job.params.choose),
        record=Path(job.output.record),
        robustness_table=Path(job.input.robustness),
        bootstrap_seed=job.params.bootstrap_seed,
    )
    _logger(job, "medxfer.bundle").info("bundled %s, chosen by %s", meta["identity"], meta["chosen_by"])


@stage
def predict(job: Any) -> None:
    from medxfer.predict import predict as run_bundle

    record = run_bundle(
        Path(job.params.bundle),
        Path(job.params.source),
        Path(job.output.folder),
        heatmaps=job.params.heatmaps,
        device=job.params.device,
        threads=job.threads,
    )
    _logger(job, "medxfer.predict").info("%s", record)


@stage
def plot_training_curves(job: Any) -> None:
    from medxfer.plots import plot_training_curves as plot

    plot([Path(p) for p in job.input.logs], Path(job.output.plot), f"fine-tuning on {job.wildcards.target}")


@stage
def summarize_results(job: Any) -> None:
    from medxfer.report import summarize_results as summarize

    targets = job.params.targets  # in the order of finetune.targets, as the rule lists overlaps and manifests
    summarize(
        [Path(p) for p in [*job.input.finetune, *job.input.classify]],
        Path(job.output.summary),
        Path(job.output.metrics),
        Path(job.output.table),
        seed=job.params.seed,
        out_headline=Path(job.output.headline),
        out_html=Path(job.output.html),
        out_benchmark_md=Path(job.output.benchmark_md),
        out_benchmark_csv=Path(job.output.benchmark_csv),
        report=job.params.report,
        # no overlap checks without in-domain pretraining
        overlap_paths=dict(zip(targets, map(Path, job.input.overlap), strict=True)) if job.input.overlap else {},
        manifest_paths=dict(zip(targets, map(Path, job.input.manifests), strict=True)),
    )


@stage
def summarize_faithfulness(job: Any) -> None:
    from medxfer.report import summarize_faithfulness as summarize

    summarize(
        [Path(p) for p in job.input.faithfulness],
        Path(job.output.table),
        Path(job.output.means),
        Path(job.output.plot),
    )
