"""Re-running only what changed: after each change to the finished tiny run, the exact set of jobs a dry run plans.

Every test changes the shared run dir (tests/conftest.py: run_dir), asks Snakemake for a dry run and puts the
change back, so the run stays complete for the other tests. Jobs are (rule, wildcards) pairs from the dry run.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from PIL import Image

pytestmark = pytest.mark.workflow

JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
TINY = yaml.safe_load((Path(__file__).parent / "workflow" / "tiny.yaml").read_text())
TARGETS, INITS, ARCHS = (TINY["finetune"][k] for k in ("targets", "inits", "archs"))
SEED = str(TINY.get("seed", 0))  # the tiny run's one training seed: its runs sit in <init>/seed<SEED>/
SOURCE = TINY["pretrain"]["source"]
SUMMARY = {("summarize_results", ""), ("all", "")}  # the report and the target rule: after any change
FAITHFULNESS = {("summarize_faithfulness", "")}  # after any change to a fine-tuned model
PREDICTIONS = TINY["predict"]  # name -> its entry: each reads one (target, init) bundle


def bundles_and_predictions(target: str, inits: list[str]) -> set[tuple[str, str]]:
    """The bundles of a target's runs (they choose among its models and classifiers) and the predictions that read
    them."""
    reading = [name for name, entry in PREDICTIONS.items() if entry["target"] == target and entry["init"] in inits]
    return jobs("export_bundle", target=target, init=inits) | jobs("predict", prediction=reading)


def planned(snakemake, run_dir: Path) -> set[tuple[str, str]]:
    """The jobs a dry run would run, as (rule, "key=value,...") in the order of the rule's wildcards."""
    result = snakemake(run_dir, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs, rule = set(), None
    for line in result.stdout.splitlines() + [""]:
        header = JOB_HEADER.match(line)
        if header:
            rule, wildcards = header[1], ""
        elif rule and line.strip().startswith("wildcards:"):
            wildcards = line.split(":", 1)[1].strip().replace(", ", ",")
        elif rule and not line.startswith(" "):  # the end of the job's block
            jobs.add((rule, wildcards))
            rule = None
    if not jobs:
        assert "Nothing to be done" in result.stdout + result.stderr
    return jobs


def jobs(rule: str, **wildcards: list[str] | str) -> set[tuple[str, str]]:
    """Every combination of the given wildcard values: jobs("extract_features", target="a", init=INITS, seed="0")."""
    lists = [[v] if isinstance(v, str) else v for v in wildcards.values()]
    combos = itertools.product(*lists)
    return {(rule, ",".join(f"{k}={v}" for k, v in zip(wildcards, combo, strict=True))) for combo in combos}


def downstream_of_target(target: str) -> set[tuple[str, str]]:
    """What depends on one target data set's manifest and cache: the check against the pretraining sources, its
    fine-tuning and everything after it, and the summary."""
    return (
        jobs("check_source_overlap", target=target)
        | jobs("finetune_model", target=target, init=INITS, seed=SEED, arch=ARCHS)
        | jobs("extract_features", target=target, init=INITS, seed=SEED)
        | jobs("explain_model", target=target, init=INITS, seed=SEED, arch=ARCHS)
        | jobs("train_classifiers", target=target, init=INITS, seed=SEED)
        | jobs("assess_robustness", target=target, init=INITS, seed=SEED)
        | jobs("plot_training_curves", target=target)
        | bundles_and_predictions(target, INITS)
        | FAITHFULNESS
        | SUMMARY
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new, 1))


@contextmanager
def restored(*paths: Path) -> Iterator[None]:
    """Put the files' bytes back afterwards (and delete files that did not exist)."""
    saved = {p: p.read_bytes() if p.exists() else None for p in paths}
    try:
        yield
    finally:
        for path, data in saved.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)


def mura_image(run_dir: Path) -> Path:
    return sorted((run_dir / "data/demo/mura/train").glob("XR_*/patient*/study*/*.png"))[0]


def test_nothing_changed_nothing_reruns(run_dir, snakemake):
    assert planned(snakemake, run_dir) == set()


def test_new_file_times_alone_rerun_nothing(run_dir, snakemake):
    """What `dvc checkout`, `cp -r` or `rsync` without -t do: the same bytes with new times, in any order."""
    files = [p for p in itertools.chain((run_dir / "data").rglob("*"), (run_dir / "results").rglob("*")) if p.is_file()]
    random.Random(0).shuffle(files)
    base = (run_dir / "results/report/summary.csv").stat().st_mtime_ns
    for i, path in enumerate(files):
        os.utime(path, ns=(base + i * 1_000_000, base + i * 1_000_000))
    assert planned(snakemake, run_dir) == set()


def test_changed_target_image_reruns_that_target_only(run_dir, snakemake):
    image = mura_image(run_dir)
    with restored(image):
        with Image.open(image) as img:
            pixels = img.load()
            pixels[0, 0] = 255 - pixels[0, 0]
            img.save(image)
        got = planned(snakemake, run_dir)
    expected = jobs("ingest_dataset", dataset="demo_mura") | jobs("cache_images", dataset="demo_mura", size="64")
    assert got == expected | downstream_of_target("demo_mura")
    assert not any(rule == "pretrain_model" or "demo_ct" in w or SOURCE in w for rule, w in got)
    assert planned(snakemake, run_dir) == set()  # the same bytes back (with a new time): nothing to do


def test_added_target_image_reruns_that_target_only(run_dir, snakemake):
    image = mura_image(run_dir)
    added = image.with_name("image99.png")
    with restored(added):
        added.write_bytes(image.read_bytes())
        got = planned(snakemake, run_dir)
    expected = jobs("ingest_dataset", dataset="demo_mura") | jobs("cache_images", dataset="demo_mura", size="64")
    assert got == expected | downstream_of_target("demo_mura")


def test_changed_source_image_reruns_pretraining_and_everything_it_feeds(run_dir, snakemake):
    image = sorted((run_dir / "data/demo/xray_source").rglob("*.png"))[0]
    with restored(image):
        image.write_bytes(image.read_bytes() + b"\0")  # trailing bytes: same pixels, other file content
        got = planned(snakemake, run_dir)
    indomain = {(r, w) for t in TARGETS for r, w in downstream_of_target(t) if "init=scratch" not in w}
    expected = (
        jobs("ingest_dataset", dataset=SOURCE)
        | jobs("cache_images", dataset=SOURCE, size="64")
        | jobs("pretrain_model", source=SOURCE, arch=ARCHS)
    )
    assert got == expected | indomain


def test_key_order_and_stated_defaults_rerun_nothing(run_dir, snakemake):
    """Settings sections have no order: keys moved, and defaults stated outright (as an overlay file does), change
    no job's params. Only the schema's defaults are written, so every value stays what the run used."""
    from medxfer.config import validate

    config = run_dir / "config/config.yaml"
    used = validate(yaml.safe_load(config.read_text()))
    augment = {k: used["pretrain"]["augment"][k] for k in ("noise_std", "degrees")}  # reversed from the schema's
    with restored(config):
        edit(
            config,
            f"pretrain:\n  source: {SOURCE}\n  epochs: 1",
            f"pretrain:\n  epochs: 1\n  augment: {augment}\n  objective: {used['pretrain']['objective']}\n"
            f"  source: {SOURCE}",
        )
        edit(config, "    format: dicom\n    root: data/demo/ct\n", "    root: data/demo/ct\n    format: dicom\n")
        edit(config, "  lime_samples: 40\n", "")
        edit(config, "  deletion_steps: 6\n", "  deletion_steps: 6\n  lime_samples: 40\n")
        assert validate(yaml.safe_load(config.read_text())) == used  # the same values
        assert planned(snakemake, run_dir) == set()


def test_classifier_hyperparameters_rerun_the_classifier_jobs_only(run_dir, snakemake):
    config = run_dir / "config/config.yaml"
    with restored(config):
        edit(config, "svm: {C: 1.0}", "svm: {C: 2.0}")
        got = planned(snakemake, run_dir)
    # the robustness sweep assesses the best fused classifier, so it reads every fused classifier's results
    robustness = jobs("assess_robustness", target=TARGETS, init=INITS, seed=SEED)
    # one job per run fits every classifier (docs/reruns.md); nothing upstream of the classifiers runs again
    bundles = set().union(*(bundles_and_predictions(t, INITS) for t in TARGETS))
    assert got == jobs("train_classifiers", target=TARGETS, init=INITS, seed=SEED) | robustness | bundles | SUMMARY


def test_new_architecture_runs_its_jobs_and_refits_fusion_and_classifiers(run_dir, snakemake):
    config = run_dir / "config/config.yaml"
    with restored(config):
        edit(config, "archs: [resnet10t, resnet18]", "archs: [resnet10t, resnet18, resnet14t]")
        got = planned(snakemake, run_dir)
    new = ["resnet14t"]
    expected = (
        jobs("pretrain_model", source=SOURCE, arch=new)
        | jobs("finetune_model", target=TARGETS, init=INITS, seed=SEED, arch=new)
        # one feature job per run covers every model: the old models' features are redone too; heatmaps are per model
        | jobs("extract_features", target=TARGETS, init=INITS, seed=SEED)
        | jobs("explain_model", target=TARGETS, init=INITS, seed=SEED, arch=new)
        | jobs("train_classifiers", target=TARGETS, init=INITS, seed=SEED)
        | jobs("assess_robustness", target=TARGETS, init=INITS, seed=SEED)
        | jobs("plot_training_curves", target=TARGETS)
        | set().union(*(bundles_and_predictions(t, INITS) for t in TARGETS))
        | FAITHFULNESS
        | SUMMARY
    )
    assert got == expected


def test_new_seed_runs_only_its_replicates_and_the_summary(run_dir, snakemake):
    config = run_dir / "config/config.yaml"
    with restored(config):
        old = "archs: [resnet10t, resnet18]\n  epochs: 2"
        edit(config, old, f"{old}\n  seeds: [0, 5]")  # the first seed, 0, is the one the tiny run used
        got = planned(snakemake, run_dir)
    expected = (
        jobs("finetune_model", target=TARGETS, init=INITS, seed="5", arch=ARCHS)
        | jobs("extract_features", target=TARGETS, init=INITS, seed="5")
        | jobs("train_classifiers", target=TARGETS, init=INITS, seed="5")
        | SUMMARY
    )
    assert got == expected
