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
import medxfer.paths as paths
import medxfer.runrecord

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


RESUME_ROOT = str(
    Path(R, paths.RESUME)
)  # training jobs' per-epoch state, outside their outputs
DATASETS = config["datasets"]
FT = config["finetune"]
ARCHS = FT["archs"]
CLASSIFIERS = list(config["classifiers"])
FEATURE_SETS = ARCHS + ["fused"]
INITS = FT["inits"]
# Training seeds: every fine-tuning run is repeated per seed, each in its own folder level (<init>/seed<k>/).
# Heatmaps and the robustness sweep use the first seed.
SEEDS = FT["seeds"]
FIRST_SEED = SEEDS[:1]
# Pretraining and every job it needs run before fine-tuning, so in-domain runs are not a chain at the end. Priorities do
# not pass to a job's inputs: each rule upstream of pretrain_model sets this one itself.
PRETRAIN_FIRST = 10
# Then the heatmaps, as soon as a model is ready: long jobs nothing waits for, which would otherwise end the run with
# one core idle. Then the chain to the classifiers and the robustness sweep (many short jobs, which pack well).
HEATMAPS_FIRST = 7
CHAIN_FIRST = 5


wildcard_constraints:
    dataset="[A-Za-z][A-Za-z0-9_]*",
    target="[A-Za-z][A-Za-z0-9_]*",
    source="[A-Za-z][A-Za-z0-9_]*(\\+[A-Za-z][A-Za-z0-9_]*)*",
    demo_set="|".join(paths.DEMO_SETS),
    arch="[a-z0-9_]+",
    init="scratch|imagenet|indomain",
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
    """The raw input: the array file for npz data sets, else the root folder."""
    ds = DATASETS[wildcards.dataset]
    if ds["format"] == "npz":
        return str(Path(ds["root"]) / ds["file"])
    return ds["root"]


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
    return at(paths.MANIFEST, dataset=name)


def cache_of(name):
    return at(paths.IMAGES, dataset=name, size=DATASETS[name]["size"])


def dataset_inputs(name):
    return {"manifest": manifest_of(name), "images": cache_of(name)}


def source_inputs(wildcards):
    """One or several (pooled, names joined by '+') pretraining sets: lists of manifests and caches."""
    names = wildcards.source.split("+")
    return {
        "manifest": [manifest_of(n) for n in names],
        "images": [cache_of(n) for n in names],
    }


def target_inputs(wildcards):
    return dataset_inputs(wildcards.target)


def demo_params(wildcards):
    demo = config["demo"]
    count = {
        "xray_source": "source_images",
        "mura": "mura_patients",
        "ct": "ct_patients",
    }[wildcards.demo_set]
    return {"seed": demo["seed"], "size": demo["image_size"], "n": demo[count]}


def run_seed(wildcards):
    return int(wildcards.seed)


def run_name(wildcards):
    """How the report names the job's seed replicate (`indomain`, `indomain-seed1`)."""
    return medxfer.config.run_name(config, wildcards.init, wildcards.seed)


def init_inputs(wildcards):
    """The weights a fine-tuning run starts from: none, a local ImageNet file, or a pretrain checkpoint."""
    init = wildcards.init
    if init == "imagenet":
        return {"weights": FT["imagenet_weights"][wildcards.arch]}
    if init == "indomain":
        source = medxfer.config.pretrain_name(config)
        return {
            name: at(paths.PRETRAINED, file, source=source, arch=wildcards.arch)
            for name, file in (("weights", "model.safetensors"), ("meta", "model.json"))
        }
    return {}


def indomain_sources():
    """The data sets in-domain pretraining learns from; none when no run starts from an in-domain checkpoint."""
    return medxfer.config.pretrain_sources(config) if "indomain" in FT["inits"] else []


def finetune_params(wildcards):
    return medxfer.config.training_params(config, "finetune", wildcards.target)


def pretrain_params(wildcards):
    names = wildcards.source.split("+")
    return medxfer.config.training_params(
        config, "pretrain", names[0] if len(names) == 1 else None
    )


def resume_dir(stage):
    """Where a training job keeps its per-epoch resume state: outside its declared outputs, so Snakemake's
    clean-up of a failed job's outputs leaves it for the re-run; the job removes it when it succeeds.
    """

    def path(wildcards):
        keys = ("source", "target", "init", "seed", "arch")
        parts = [
            f"seed{getattr(wildcards, k)}" if k == "seed" else getattr(wildcards, k)
            for k in keys
            if hasattr(wildcards, k)
        ]
        return str(Path(RESUME_ROOT, stage, *parts))

    return path


def model_files(name):
    """Input function: the file `name` of every fine-tuned model (one per arch) of the job's target, init and seed."""

    def files(wildcards):
        w = wildcards
        return [
            at(paths.MODEL, name, target=w.target, init=w.init, seed=w.seed, arch=a)
            for a in ARCHS
        ]

    return files


def features_file(wildcards, features):
    """One feature matrix of the job's run: a model's, or the fusion's (`features` = "fused")."""
    w = wildcards
    if features == "fused":
        return at(paths.FUSED, target=w.target, init=w.init, seed=w.seed)
    return at(paths.FEATURES, target=w.target, init=w.init, seed=w.seed, arch=features)


def ensemble_members():
    """The classifiers the soft-voting ensemble combines: as configured, or every other one."""
    others = [c for c in CLASSIFIERS if c != "ensemble"]
    members = config["classifiers"].get("ensemble", {}).get("members") or others
    missing = [m for m in members if m not in others]
    if missing or len(members) < 2:
        raise ValueError(
            f"config key 'classifiers.ensemble.members': {members} must name at least two other configured "
            f"classifiers (configured: {others}); missing: {missing}"
        )
    return members


def fit_order():
    """The configured classifiers, the ensemble last: it votes over the others' fitted models."""
    return [c for c in CLASSIFIERS if c != "ensemble"] + [
        c for c in CLASSIFIERS if c == "ensemble"
    ]


def classifier_inputs(wildcards):
    """Every feature file of one run: each model's and the fusion.

    One job fits every classifier on every feature set of a run: one process start-up instead of one per
    classifier, at the price of re-fitting all of a run's classifiers (seconds) when one classifier's settings change.
    """
    return {"features": [features_file(wildcards, f) for f in FEATURE_SETS]}


def classify_outputs(name):
    """One file per (classifier, feature set) of a run, classifiers in fit_order(), feature sets in FEATURE_SETS."""
    return [
        at(paths.CLASSIFIER, name, features=f, clf=c)
        for c in fit_order()
        for f in FEATURE_SETS
    ]


def finetune_metrics(name="metrics.json"):
    return expand(
        at(paths.MODEL, name), target=FT["targets"], init=INITS, seed=SEEDS, arch=ARCHS
    )


def classify_metrics(name="metrics.json"):
    return expand(
        at(paths.CLASSIFIER, name),
        target=FT["targets"],
        init=INITS,
        seed=SEEDS,
        features=FEATURE_SETS,
        clf=CLASSIFIERS,
    )


HEATMAP_FILES = {"folder": paths.HEATMAPS, "faithfulness": paths.FAITHFULNESS}


def explanations(kind="folder"):
    """Every model's heatmap folder, or its faithfulness table (kept beside the folders, see explain.smk)."""
    return expand(
        at(HEATMAP_FILES[kind]),
        target=FT["targets"],
        init=INITS,
        seed=FIRST_SEED,
        arch=ARCHS,
    )


def explain_outputs(kind):
    """One run's heatmap folders (each in the HTML report) or faithfulness tables, one per arch."""
    files = [at(HEATMAP_FILES[kind], arch=arch) for arch in ARCHS]
    if kind == "faithfulness":
        return files
    return [reported_folder(path, arch) for path, arch in zip(files, ARCHS)]


def reported_folder(path, arch):
    """A heatmap folder as a directory output whose gallery.png goes into the HTML report."""
    return report(
        directory(path),
        patterns=["{gallery,gallery}.png"],
        caption="../report/gallery.rst",
        category="Heatmaps",
        subcategory="{target}",
        labels={"init": "{init}", "model": arch},
    )


def fused_classifier(wildcards, clf, name):
    return at(
        paths.CLASSIFIER,
        name,
        target=wildcards.target,
        init=wildcards.init,
        seed=wildcards.seed,
        features="fused",
        clf=clf,
    )


def robustness_inputs(wildcards):
    """The target's CNNs, their features (the fusion is refitted on their train rows), the fused classifiers
    (the best by out-of-fold val AUC is assessed) and, for CT, the raw data (the HU-window shift decodes raw HU
    again).
    """
    w = wildcards
    inputs = {
        "weights": model_files("model.safetensors")(w),
        "metas": model_files("model.json")(w),
        "features": [features_file(w, arch) for arch in ARCHS],
        "classifiers": [fused_classifier(w, c, "metrics.json") for c in CLASSIFIERS],
        "models": [fused_classifier(w, c, "model.skops") for c in CLASSIFIERS],
    }
    if DATASETS[w.target].get("modality") == "ct":
        inputs["raw"] = ancient_raw(SimpleNamespace(dataset=w.target))
    return inputs


def reported(name, category):
    """classify_outputs(name), each marked for the HTML report under `category`, labelled by classifier and features."""
    caption = f"../report/{name.split('.')[0]}.rst"
    pairs = [(c, f) for c in fit_order() for f in FEATURE_SETS]
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
    """Per target, the check that no test image is a copy of a pretraining image (only with in-domain init)."""
    return expand(
        at(paths.SOURCE_OVERLAP), target=FT["targets"] if indomain_sources() else []
    )


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
    ]
