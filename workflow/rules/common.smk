# Targets, input functions and wildcard constraints. No heavy logic: that lives in src/medxfer.
import sys
from pathlib import Path

# This checkout's library, also where medxfer is not installed (workflow/scripts do the same for jobs).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

import medxfer.config

_validated = medxfer.config.validate(config)
config.clear()
config.update(_validated)

R = config["results"]
DATASETS = config["datasets"]
FT = config["finetune"]
ARCHS = FT["archs"]
CLASSIFIERS = list(config["classifiers"])
FEATURE_SETS = ARCHS + ["fused"]
DEMO_SETS = ["xray_source", "mura", "ct"]


wildcard_constraints:
    dataset="[A-Za-z][A-Za-z0-9_]*",
    target="[A-Za-z][A-Za-z0-9_]*",
    source="[A-Za-z][A-Za-z0-9_]*",
    demo_set="|".join(DEMO_SETS),
    arch="[a-z0-9_]+",
    init="scratch|imagenet|indomain",
    clf="|".join(CLASSIFIERS),
    features="[a-z0-9_]+",
    size="[0-9]+",


def raw_of(name):
    """The raw input: the array file for npz data sets (so an in-place edit re-runs ingest), else the root folder."""
    ds = DATASETS[name]
    if ds["format"] == "npz":
        return str(Path(ds["root"]) / ds["file"])
    return ds["root"]


def dataset_root(wildcards):
    return raw_of(wildcards.dataset)


def manifest_of(name):
    return f"{R}/datasets/{name}/manifest.csv"


def cache_of(name):
    return f"{R}/datasets/{name}/images_{DATASETS[name]['size']}.npy"


def dataset_inputs(name):
    return {"manifest": manifest_of(name), "images": cache_of(name)}


def source_inputs(wildcards):
    return dataset_inputs(wildcards.source)


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


def init_inputs(wildcards):
    """The weights a fine-tuning run starts from: none, a local ImageNet file, or a pretrain checkpoint."""
    if wildcards.init == "imagenet":
        return {"weights": FT["imagenet_weights"][wildcards.arch]}
    if wildcards.init == "indomain":
        ckpt = f"{R}/pretrain/{config['pretrain']['source']}/{wildcards.arch}"
        return {"weights": f"{ckpt}/model.safetensors", "meta": f"{ckpt}/model.json"}
    return {}


def finetune_params(wildcards):
    return medxfer.config.training_params(config, "finetune")


def pretrain_params(wildcards):
    return medxfer.config.training_params(config, "pretrain")


def features_file(target, init, features):
    if features == "fused":
        return f"{R}/fused/{target}/{init}/features.npz"
    return f"{R}/features/{target}/{init}/{features}.npz"


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


def classifier_inputs(wildcards):
    """Every feature file (each model and the fusion), plus the members' results for the ensemble.

    One job fits one classifier on all feature sets: the same re-runs as one job per set (a changed classifier
    re-runs only its own jobs), with a third of the process start-ups.
    """
    w = wildcards
    inputs = {"features": [features_file(w.target, w.init, f) for f in FEATURE_SETS]}
    if w.clf == "ensemble":
        base = f"{R}/classify/{w.target}/{w.init}"
        inputs["members"] = [
            f"{base}/{f}/{m}/metrics.json"
            for f in FEATURE_SETS
            for m in ensemble_members()
        ]
    return inputs


def classify_outputs(name):
    return expand(
        f"{R}/classify/{{{{target}}}}/{{{{init}}}}/{{features}}/{{{{clf}}}}/{name}",
        features=FEATURE_SETS,
    )


def finetune_metrics(name="metrics.json"):
    return expand(
        f"{R}/finetune/{{target}}/{{init}}/{{arch}}/{name}",
        target=FT["targets"],
        init=FT["inits"],
        arch=ARCHS,
    )


def classify_metrics(name="metrics.json"):
    return expand(
        f"{R}/classify/{{target}}/{{init}}/{{features}}/{{clf}}/{name}",
        target=FT["targets"],
        init=FT["inits"],
        features=FEATURE_SETS,
        clf=CLASSIFIERS,
    )


def explanations():
    return expand(
        f"{R}/explain/{{target}}/{{init}}/{{arch}}",
        target=FT["targets"],
        init=FT["inits"],
        arch=ARCHS,
    )


def robustness_inputs(wildcards):
    """The target's CNNs, their features (the fusion is refitted on their train rows), the fused classifiers
    (the best by CV AUC is assessed) and, for CT, the raw data (the HU-window shift decodes raw HU again).
    """
    w = wildcards
    inputs = {
        "weights": expand(
            f"{R}/finetune/{w.target}/{w.init}/{{arch}}/model.safetensors", arch=ARCHS
        ),
        "metas": expand(
            f"{R}/finetune/{w.target}/{w.init}/{{arch}}/model.json", arch=ARCHS
        ),
        "features": [features_file(w.target, w.init, arch) for arch in ARCHS],
        "classifiers": expand(
            f"{R}/classify/{w.target}/{w.init}/fused/{{clf}}/metrics.json",
            clf=CLASSIFIERS,
        ),
        "models": expand(
            f"{R}/classify/{w.target}/{w.init}/fused/{{clf}}/model.skops",
            clf=CLASSIFIERS,
        ),
    }
    if DATASETS[w.target].get("modality") == "ct":
        inputs["raw"] = raw_of(w.target)
    return inputs


def reported(name, category):
    """classify_outputs(name), each marked for the HTML report under `category`, labelled by its feature set."""
    caption = f"../report/{name.split('.')[0]}.rst"
    paths = classify_outputs(name)
    return [mark_report(p, caption, category, f) for f, p in zip(FEATURE_SETS, paths)]


def mark_report(path, caption, category, features):
    labels = {"init": "{init}", "features": features, "classifier": "{clf}"}
    return report(
        path, caption=caption, category=category, subcategory="{target}", labels=labels
    )


def final_outputs():
    return [
        f"{R}/report/summary.csv",
        f"{R}/report/metrics.json",
        f"{R}/report/summary.md",
        f"{R}/report/summary.html",
        f"{R}/report/faithfulness.csv",
        *explanations(),
        *expand(
            f"{R}/robustness/{{target}}/{{init}}.png",
            target=FT["targets"],
            init=FT["inits"],
        ),
        *expand(f"{R}/report/training/{{target}}.png", target=FT["targets"]),
    ]
