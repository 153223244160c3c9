# Targets, input functions and wildcard constraints. No heavy logic: that lives in src/medxfer.
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError

# This checkout's library, also where medxfer is not installed; jobs (workflow/scripts, in any conda env, on cluster
# nodes too) inherit it through PYTHONPATH, so they run the code of the checkout that planned them.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
# set here, not read from the user: nothing for an `envvars:` directive to assert
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
)

import medxfer.config
import medxfer.fingerprint
import medxfer.jobs as jobs
import medxfer.paths as paths
import medxfer.runrecord
import medxfer.scheduler_timers

# one pending scheduler wake-up, not a self-renewing one per finished job (see the module)
medxfer.scheduler_timers.coalesce_reevaluation_timers()

RUN_STARTED = time.time()  # report/run.json counts the jobs that started after this

# Snakemake reads the config files itself and keeps the last of a key given twice: read each again, strictly.
for _configfile in workflow.configfiles:
    medxfer.config.read_yaml(_configfile)
_validated = medxfer.config.validate(config)
config.clear()
config.update(_validated)

R = config["results"]


def at(template, name=None, **fields):
    """An artifact of this run's results folder (medxfer.paths names each once); wildcards not given stay."""
    return paths.artifact(R, template, name, **fields)


DATASETS = config["datasets"]
FT = config["finetune"]
ARCHS = FT["archs"]
CLASSIFIERS = list(config["classifiers"])
FEATURE_SETS = jobs.feature_sets(config)
# train_classifiers' settings (this also checks the combiners' members)
CLASSIFY = jobs.classify_params(config)
INITS = FT["inits"]
# Training seeds: every fine-tuning run is repeated per seed, each in its own folder level (<init>/seed<k>/).
# Heatmaps and the robustness sweep use the first seed.
SEEDS = FT["seeds"]
FIRST_SEED = [jobs.first_seed(config)]
# Pretraining and every job it needs run before fine-tuning, so in-domain runs are not a chain at the end. Priorities do
# not pass to a job's inputs: each rule upstream of pretrain_model sets this one itself.
PRETRAIN_FIRST = 10
# Then the heatmaps, as soon as a model is ready: long jobs nothing waits for, which would otherwise end the run with
# one core idle. Then the chain to the classifiers and the robustness sweep (many short jobs, which pack well).
HEATMAPS_FIRST = 7
CHAIN_FIRST = 5


def chain_priority(wildcards):
    """The first seed's chain a step ahead of the other seeds': its models and classifiers feed the heatmaps and the
    robustness sweep, long jobs that would otherwise start last and end the run with one core idle.
    """
    return CHAIN_FIRST + 1 if int(wildcards.seed) == FIRST_SEED[0] else CHAIN_FIRST


wildcard_constraints:
    dataset="[A-Za-z][A-Za-z0-9_]*",
    prediction="[A-Za-z][A-Za-z0-9_]*",
    target="[A-Za-z][A-Za-z0-9_]*",
    source="[A-Za-z][A-Za-z0-9_]*(\\+[A-Za-z][A-Za-z0-9_]*)*",
    demo_set="|".join(paths.DEMO_SETS),
    arch="[a-z0-9_]+",
    init="|".join(medxfer.config.known_inits()),
    seed="[0-9]+",
    clf="|".join(CLASSIFIERS),
    features="[a-z0-9_]+",
    size="[0-9]+",


def invocation_cores():
    """--cores of this invocation; None for a cluster run, which sets --jobs instead."""
    try:
        return workflow.cores
    except WorkflowError:
        return None


def dataset_root(wildcards):
    return jobs.dataset_root(config, wildcards.dataset)


def ancient_raw(wildcards):
    """The raw input with its file time ignored (DVC resets times); raw_fingerprint tells whether it changed."""
    return ancient(dataset_root(wildcards))


def demo_stamp(demo_set):
    """synthesize_demo's record of a generated set (settings and content digest); with "{demo_set}", its output."""
    return f"{paths.DEMO_ROOT}/{demo_set}.json"


def raw_inputs(wildcards):
    """Ingest's inputs: the raw data (time ignored) and, for generated demo data, synthesize_demo's stamp, so a
    re-run of the generator re-runs ingest in the same invocation."""
    inputs = {"raw": ancient_raw(wildcards)}
    demo_set = paths.generated_demo_set(dataset_root(wildcards))
    if demo_set:
        inputs["stamp"] = demo_stamp(demo_set)
    return inputs


def raw_fingerprint(wildcards):
    """Content digest of the raw files (medxfer.fingerprint); a change re-runs ingest through the params trigger.

    Generated demo data count by their generator's settings until edited, so the value recorded before they exist
    (a cluster run records the params of the DAG build) equals the value of the next invocation.
    """
    name = wildcards.dataset
    demo_set = paths.generated_demo_set(dataset_root(wildcards))
    if demo_set:
        settings = demo_params(SimpleNamespace(demo_set=demo_set)) | {
            "demo_set": demo_set
        }
        return medxfer.fingerprint.generated_fingerprint(
            name, DATASETS[name], demo_stamp(demo_set), settings
        )
    return medxfer.fingerprint.dataset_fingerprint(name, DATASETS[name])


def manifest_of(name):
    return jobs.manifest_of(config, name)


def cache_of(name):
    return jobs.cache_of(config, name)


# What the stage jobs read and are given: medxfer.jobs, which `medxfer <stage>` calls too.
def source_inputs(wildcards):
    return jobs.source_inputs(config, wildcards)


def target_inputs(wildcards):
    return jobs.target_inputs(config, wildcards)


def demo_params(wildcards):
    demo = config["demo"]
    count = {
        "xray_source": "source_images",
        "mura": "mura_patients",
        "ct": "ct_patients",
        "grades": "grade_patients",
    }[wildcards.demo_set]
    return {"seed": demo["seed"], "size": demo["image_size"], "n": demo[count]}


run_seed = jobs.run_seed


def init_inputs(wildcards):
    return jobs.init_inputs(config, wildcards)


def indomain_sources():
    return jobs.indomain_sources(config)


def model_files(name):
    """Input function: the file `name` of every fine-tuned model (one per arch) of the job's target, init and seed."""
    return lambda wildcards: jobs.model_files(config, name, wildcards)


def features_file(wildcards, features):
    return jobs.features_file(R, wildcards, features)


def classifier_inputs(wildcards):
    """Every feature file of one run: each model's and the fusion.

    One job fits every classifier on every feature set of a run: one process start-up instead of one per
    classifier, at the price of re-fitting all of a run's classifiers (seconds) when one classifier's settings change.
    """
    return jobs.classifier_inputs(config, wildcards)


def classify_outputs(name):
    return jobs.classify_outputs(config, R, name)


def explanations(kind="folder"):
    """Every model's heatmap folder, or its faithfulness table (kept beside the folders, see explain.smk)."""
    return jobs.explanations(config, kind)


def reported_folder(path):
    """A model's heatmap folder as a directory output whose gallery.png goes into the HTML report."""
    return report(
        directory(path),
        patterns=["{gallery,gallery}.png"],
        caption="../report/gallery.rst",
        category="Heatmaps",
        subcategory="{target}",
        labels={"init": "{init}", "model": "{arch}"},
    )


def job_params(builder):
    """A rule's params from a medxfer.jobs builder, one input function per key, so each is its own re-run trigger
    as a literal param would be (the keys are the builder's for the first target). Settings sections have no
    order, so their keys are sorted: moving a key in a config file re-runs nothing."""
    probe = SimpleNamespace(
        target=FT["targets"][0],
        init=INITS[0],
        seed=SEEDS[0],
        arch=ARCHS[0],
        source=next(iter(DATASETS)),
    )
    keys = builder(config, probe).keys()
    return {
        key: (
            lambda wildcards, key=key: medxfer.config.canonical(
                builder(config, wildcards)[key]
            )
        )
        for key in keys
    }


def bundle_inputs(wildcards):
    return jobs.bundle_inputs(config, wildcards)


def _generated_set_of(source):
    """The demo set a path lies in, if rule synthesize_demo makes it; else None."""
    path = Path(source)
    return next(
        (s for s in map(paths.generated_demo_set, [path, *path.parents]) if s), None
    )


def predict_inputs(wildcards):
    """The bundle and the images (time ignored, as for ingest); for demo images, the generated set they lie in and
    synthesize_demo's stamp."""
    source = config["predict"][wildcards.prediction]["input"]
    inputs = {
        "bundle": jobs.predict_bundle(config, wildcards, paths.BUNDLE_RECORD),
        "images": ancient(source),
    }
    demo_set = _generated_set_of(source)
    if demo_set:
        inputs |= {
            "images": ancient(f"{paths.DEMO_ROOT}/{demo_set}"),
            "stamp": demo_stamp(demo_set),
        }
    return inputs


def predict_fingerprint(wildcards):
    """Content digest of the images a prediction reads; images under generated demo data count by the generator's
    settings until edited (see raw_fingerprint)."""
    source = config["predict"][wildcards.prediction]["input"]
    demo_set = _generated_set_of(source)
    if demo_set:
        root = f"{paths.DEMO_ROOT}/{demo_set}"
        settings = demo_params(SimpleNamespace(demo_set=demo_set)) | {
            "demo_set": demo_set,
            "input": source,
        }
        return medxfer.fingerprint.generated_fingerprint(
            f"predict-{wildcards.prediction}",
            {"format": "imagefolder", "root": root},
            demo_stamp(demo_set),
            settings,
        )
    sidecar = Path(
        medxfer.fingerprint.SIDECAR_DIR, f"predict-{wildcards.prediction}.json"
    )
    return medxfer.fingerprint.fingerprint([source], sidecar)["sha256"]


def robustness_inputs(wildcards):
    inputs = jobs.robustness_inputs(config, wildcards)
    if "raw" in inputs:  # time ignored, as for ingest (DVC resets times)
        inputs["raw"] = ancient(inputs["raw"])
    return inputs


def reported(name, category):
    """classify_outputs(name), each marked for the HTML report under `category`, labelled by classifier and features."""
    caption = f"../report/{name.split('.')[0]}.rst"
    pairs = [(c, f) for c in jobs.fit_order(config) for f in FEATURE_SETS]
    return [
        mark_report(p, caption, category, c, f)
        for (c, f), p in zip(pairs, classify_outputs(name))
    ]


def mark_report(path, caption, category, classifier, features):
    labels = {
        "init": "{init}",
        "seed": "{seed}",
        "features": features,
        "classifier": classifier,
    }
    return report(
        path, caption=caption, category=category, subcategory="{target}", labels=labels
    )


def source_overlap_checks():
    return jobs.source_overlap_checks(config)


def final_outputs():
    return [
        *rules.summarize_results.output,
        *rules.summarize_faithfulness.output,
        *explanations(),
        *expand(
            at(paths.ROBUSTNESS_PLOT),
            target=FT["targets"],
            init=INITS,
            seed=FIRST_SEED,
        ),
        *expand(at(paths.TRAINING_CURVES), target=FT["targets"]),
        *source_overlap_checks(),
        *jobs.bundles(config),
        *jobs.predictions(config),
    ]
