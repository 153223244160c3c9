"""What each workflow job reads, writes and is given: pure functions of the validated config and the job's wildcards.

The rules' input functions and params (workflow/rules/common.smk) and `medxfer <stage>` both call these, so the
command line redoes a job with that job's inputs, settings and output paths. `wildcards` is any object with the
job's wildcards as attributes (Snakemake's, or the namespace the command line builds). Inputs sit under the config's
`results` folder; outputs under `results`, given separately (the config's, or the command line's --out).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from medxfer import config as cfg
from medxfer import paths


def run_fields(wildcards: Any) -> dict[str, str]:
    """The wildcards naming one fine-tuning run (target, init, seed) of the job."""
    return {k: str(getattr(wildcards, k)) for k in ("target", "init", "seed")}


def manifest_of(config: Mapping[str, Any], name: str) -> str:
    return paths.artifact(config["results"], paths.MANIFEST, dataset=name)


def cache_of(config: Mapping[str, Any], name: str) -> str:
    return paths.artifact(config["results"], paths.IMAGES, dataset=name, size=config["datasets"][name]["size"])


def dataset_inputs(config: Mapping[str, Any], name: str) -> dict[str, str]:
    return {"manifest": manifest_of(config, name), "images": cache_of(config, name)}


def target_inputs(config: Mapping[str, Any], wildcards: Any) -> dict[str, str]:
    return dataset_inputs(config, wildcards.target)


def source_inputs(config: Mapping[str, Any], wildcards: Any) -> dict[str, Any]:
    """One or several (pooled, names joined by '+') pretraining sets: lists of manifests and caches; and the
    ImageNet file pretraining starts from, with `pretrain.init: imagenet`."""
    names = wildcards.source.split("+")
    inputs: dict[str, Any] = {
        "manifest": [manifest_of(config, n) for n in names],
        "images": [cache_of(config, n) for n in names],
    }
    if config["pretrain"]["init"] == "imagenet":
        inputs["weights"] = config["finetune"]["imagenet_weights"][wildcards.arch]
    return inputs


def pretrain_params(config: Mapping[str, Any], wildcards: Any) -> dict[str, Any]:
    """A single source set's own augment keys apply; pooled sets share the stage's."""
    names = wildcards.source.split("+")
    return cfg.training_params(config, "pretrain", names[0] if len(names) == 1 else None)


def run_seed(wildcards: Any) -> int:
    return int(wildcards.seed)


def run_name(config: Mapping[str, Any], wildcards: Any) -> str:
    """How the report names the job's seed replicate (`indomain`, `indomain-seed1`)."""
    return cfg.run_name(config, wildcards.init, wildcards.seed)


def init_inputs(config: Mapping[str, Any], wildcards: Any) -> dict[str, str]:
    """The weights a fine-tuning run starts from: none, a local ImageNet file, or a pretrain checkpoint."""
    if wildcards.init == "imagenet":
        return {"weights": config["finetune"]["imagenet_weights"][wildcards.arch]}
    if wildcards.init == "indomain":
        checkpoint = paths.artifact(
            config["results"], paths.PRETRAINED, source=cfg.pretrain_name(config), arch=wildcards.arch
        )
        return {"weights": f"{checkpoint}/model.safetensors", "meta": f"{checkpoint}/model.json"}
    return {}


def init_path(init: str, weights: str | None) -> Path | None:
    """What finetune_model starts from: the ImageNet file itself, the pretrain checkpoint folder, or nothing."""
    if weights is None:
        return None
    return Path(weights).parent if init == "indomain" else Path(weights)


def resume_dir(results: str, stage: str, wildcards: Any) -> str:
    """Where a training job keeps its per-epoch resume state: outside its declared outputs, so Snakemake's
    clean-up of a failed job's outputs leaves it for the re-run; the job removes it when it succeeds."""
    keys = ("source", "target", "init", "seed", "arch")
    parts = [
        f"seed{getattr(wildcards, k)}" if k == "seed" else getattr(wildcards, k) for k in keys if hasattr(wildcards, k)
    ]
    return str(Path(results, paths.RESUME, stage, *parts))


def finetune_params(config: Mapping[str, Any], wildcards: Any) -> dict[str, Any]:
    return cfg.training_params(config, "finetune", wildcards.target)


def _resume(config: Mapping[str, Any], stage: str, wildcards: Any, results: str | None) -> dict[str, str]:
    results = results or config["results"]
    return {"resume": resume_dir(results, stage, wildcards), "resume_root": str(Path(results, paths.RESUME))}


def pretrain_settings(config: Mapping[str, Any], wildcards: Any, results: str | None = None) -> dict[str, Any]:
    """pretrain_model's params; `results`: where the job writes (the command line's --out), default the config's."""
    return (
        {"train": pretrain_params(config, wildcards)}
        | _resume(config, "pretrain", wildcards, results)
        | {"seed": config["seed"], "device": config["device"]}
    )


def finetune_settings(config: Mapping[str, Any], wildcards: Any, results: str | None = None) -> dict[str, Any]:
    """finetune_model's params (see pretrain_settings)."""
    return (
        {"train": finetune_params(config, wildcards)}
        | _resume(config, "finetune", wildcards, results)
        | {
            "run": run_name(config, wildcards),
            "seed": run_seed(wildcards),
            "decision": config["decision"]["threshold"],
            "ordinal": config["datasets"][wildcards.target]["ordinal"],
            "device": config["device"],
        }
    )


def extract_settings(config: Mapping[str, Any], wildcards: Any) -> dict[str, Any]:
    """extract_features' params: the fusion is seeded by the run's training seed."""
    features = config["features"]
    return {
        "batch_size": features["batch_size"],
        "stages": features["stages"],
        "device": config["device"],
        "fusion": config["fusion"],
        "seed": run_seed(wildcards),
    }


def explain_settings(config: Mapping[str, Any], wildcards: Any) -> dict[str, Any]:
    return {"explain": config["explain"], "seed": config["seed"], "device": config["device"]}


def overlap_settings(config: Mapping[str, Any], wildcards: Any) -> dict[str, Any]:
    """check_source_overlap's params: the sources pretraining reads, and the target's near-duplicate distance (pairs
    that close are listed for review)."""
    return {
        "sources": indomain_sources(config),
        "near_distance": config["datasets"][wildcards.target]["near_duplicate_distance"],
    }


def model_files(config: Mapping[str, Any], name: str, wildcards: Any) -> list[str]:
    """The file `name` of every fine-tuned model (one per arch) of the job's target, init and seed."""
    run = run_fields(wildcards)
    return [paths.artifact(config["results"], paths.MODEL, name, arch=a, **run) for a in config["finetune"]["archs"]]


def feature_sets(config: Mapping[str, Any]) -> list[str]:
    """Each model's features, then their fusion."""
    return [*config["finetune"]["archs"], "fused"]


def features_file(results: str, wildcards: Any, features: str) -> str:
    """One feature matrix of the job's run: a model's, or the fusion's (`features` = "fused")."""
    run = run_fields(wildcards)
    if features == "fused":
        return paths.artifact(results, paths.FUSED, **run)
    return paths.artifact(results, paths.FEATURES, arch=features, **run)


def extract_outputs(config: Mapping[str, Any], results: str, wildcards: Any) -> dict[str, Any]:
    """extract_features' outputs: one feature file per arch, the fused features, the fusion report and the fitted
    fusion transform."""
    run = run_fields(wildcards)
    return {
        "features": [features_file(results, wildcards, arch) for arch in config["finetune"]["archs"]],
        "fused": paths.artifact(results, paths.FUSED, **run),
        "report": paths.artifact(results, paths.FUSION_REPORT, **run),
        "transform": paths.artifact(results, paths.FUSION_TRANSFORM, **run),
    }


def classifier_inputs(config: Mapping[str, Any], wildcards: Any) -> dict[str, list[str]]:
    """Every feature file of one run: each model's and the fusion."""
    return {"features": [features_file(config["results"], wildcards, f) for f in feature_sets(config)]}


def combined_members(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """For each configured combiner (ensemble, stacking): the classifiers it combines, as configured or every other
    one."""
    others = [c for c in config["classifiers"] if c not in cfg.COMBINERS]
    combined = {}
    for combiner in (c for c in config["classifiers"] if c in cfg.COMBINERS):
        members = (config["classifiers"][combiner] or {}).get("members") or others
        missing = [m for m in members if m not in others]
        if missing or len(members) < 2:
            raise ValueError(
                f"config key 'classifiers.{combiner}.members': {members} must name at least two other configured "
                f"classifiers (configured: {others}); missing: {missing}"
            )
        combined[combiner] = list(members)
    return combined


def fit_order(config: Mapping[str, Any]) -> list[str]:
    """The configured classifiers, the combiners last: they combine the others' fitted models."""
    names = list(config["classifiers"])
    return [c for c in names if c not in cfg.COMBINERS] + [c for c in names if c in cfg.COMBINERS]


def classify_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """train_classifiers' settings, the same for every run: hyperparameters in fit order, the feature sets, ..."""
    return {
        "classifiers": {c: config["classifiers"][c] for c in fit_order(config)},
        "feature_sets": feature_sets(config),
        "members": combined_members(config),
        "decision": config["decision"]["threshold"],
        "pca_components": config["classify"]["pca_components"],
    }


CLASSIFY_FILES = {  # train_classifiers' outputs per (classifier, feature set), by the rule's output names
    "model": "model.skops",
    "predictions": "predictions.csv",
    "oof": "oof.csv",
    "metrics": "metrics.json",
    "roc": "roc.csv",
    "roc_plot": "roc.png",
    "confusion_plot": "confusion.png",
    "reliability_plot": "reliability.png",
}


def classify_outputs(config: Mapping[str, Any], results: str, name: str, wildcards: Any = None) -> list[str]:
    """One file per (classifier, feature set) of a run, classifiers in fit_order(), feature sets in feature_sets();
    without `wildcards`, the rule's patterns."""
    run = run_fields(wildcards) if wildcards is not None else {}
    return [
        paths.artifact(results, paths.CLASSIFIER, name, features=f, clf=c, **run)
        for c in fit_order(config)
        for f in feature_sets(config)
    ]


HEATMAP_FILES = {"folder": paths.HEATMAPS, "faithfulness": paths.FAITHFULNESS}


def dataset_root(config: Mapping[str, Any], name: str) -> str:
    """A data set's raw input: the array file for npz data sets, else the root folder."""
    dataset = config["datasets"][name]
    return str(Path(dataset["root"], dataset["file"])) if dataset["format"] == "npz" else dataset["root"]


def indomain_sources(config: Mapping[str, Any]) -> list[str]:
    """The data sets in-domain pretraining learns from; none when no run starts from an in-domain checkpoint."""
    return cfg.pretrain_sources(config) if cfg.pretrains(config) else []


def first_seed(config: Mapping[str, Any]) -> int:
    """The seed the heatmaps, the robustness sweep and the training curves use."""
    return config["finetune"]["seeds"][0]


def _runs(config: Mapping[str, Any], seeds: list[int] | None = None) -> list[dict[str, Any]]:
    ft = config["finetune"]
    seeds = ft["seeds"] if seeds is None else seeds
    return [dict(target=t, init=i, seed=s) for t in ft["targets"] for i in ft["inits"] for s in seeds]


def finetune_metrics(config: Mapping[str, Any], name: str = "metrics.json") -> list[str]:
    """The file `name` of every fine-tuned model of the config."""
    archs = config["finetune"]["archs"]
    return [paths.artifact(config["results"], paths.MODEL, name, arch=a, **run) for run in _runs(config) for a in archs]


def classify_metrics(config: Mapping[str, Any], name: str = "metrics.json") -> list[str]:
    """The file `name` of every classifier on every feature set of every run of the config."""
    return [
        paths.artifact(config["results"], paths.CLASSIFIER, name, features=f, clf=c, **run)
        for run in _runs(config)
        for f in feature_sets(config)
        for c in config["classifiers"]
    ]


def explanations(config: Mapping[str, Any], kind: str = "folder") -> list[str]:
    """Every model's heatmap folder, or its faithfulness table (first seed only)."""
    archs = config["finetune"]["archs"]
    template = HEATMAP_FILES[kind]
    return [
        paths.artifact(config["results"], template, arch=a, **run)
        for run in _runs(config, [first_seed(config)])
        for a in archs
    ]


def source_overlap_checks(config: Mapping[str, Any]) -> list[str]:
    """Per target, the check that no test image is a copy of a pretraining image (only with in-domain init)."""
    targets = config["finetune"]["targets"] if indomain_sources(config) else []
    return [paths.artifact(config["results"], paths.SOURCE_OVERLAP, target=t) for t in targets]


def training_logs(config: Mapping[str, Any], wildcards: Any) -> list[str]:
    """The log.csv of every model of one target (first seed), the training curves' input."""
    ft = config["finetune"]
    return [
        paths.artifact(
            config["results"], paths.MODEL, "log.csv", target=wildcards.target, init=i, seed=first_seed(config), arch=a
        )
        for i in ft["inits"]
        for a in ft["archs"]
    ]


def robustness_inputs(config: Mapping[str, Any], wildcards: Any) -> dict[str, Any]:
    """The target's CNNs, the fusion fitted on their features, the fused classifiers (the best by out-of-fold val AUC
    is assessed) and, for CT, the raw data (the HU-window shift decodes raw HU again)."""
    run = run_fields(wildcards)

    def fused(clf: str, name: str) -> str:
        return paths.artifact(config["results"], paths.CLASSIFIER, name, features="fused", clf=clf, **run)

    inputs: dict[str, Any] = {
        "weights": model_files(config, "model.safetensors", wildcards),
        "metas": model_files(config, "model.json", wildcards),
        "fusion": paths.artifact(config["results"], paths.FUSION_TRANSFORM, **run),
        "classifiers": [fused(c, "metrics.json") for c in config["classifiers"]],
        "models": [fused(c, "model.skops") for c in config["classifiers"]],
    }
    if config["datasets"][wildcards.target]["modality"] == "ct":
        inputs["raw"] = dataset_root(config, wildcards.target)
    return inputs


ROBUSTNESS_FILES = {"table": paths.ROBUSTNESS_TABLE, "plot": paths.ROBUSTNESS_PLOT}


def robustness_params(config: Mapping[str, Any], wildcards: Any) -> dict[str, Any]:
    return {
        "dataset": config["datasets"][wildcards.target],
        "robustness": config["robustness"],
        "features": config["features"],
        "seed": config["seed"],
        "device": config["device"],
    }


SUMMARY_FILES = {  # summarize_results' outputs under report/, by the rule's output names
    "summary": "summary.csv",
    "metrics": "metrics.json",
    "table": "summary.md",
    "headline": "headline.csv",
    "benchmark_md": "benchmark.md",
    "benchmark_csv": "benchmark.csv",
    "html": "summary.html",
}
FAITHFULNESS_SUMMARY_FILES = {
    "table": "faithfulness.csv",
    "means": "faithfulness_summary.csv",
    "plot": "faithfulness.png",
}


def summary_inputs(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every metrics.json, the predictions beside each (intervals, the paired comparison), the overlap checks and the
    targets' manifests, targets in the order of finetune.targets."""
    return {
        "finetune": finetune_metrics(config),
        "classify": classify_metrics(config),
        "cnn_predictions": finetune_metrics(config, "predictions.csv"),
        "predictions": classify_metrics(config, "predictions.csv"),
        "overlap": source_overlap_checks(config),
        "manifests": [manifest_of(config, t) for t in config["finetune"]["targets"]],
    }


def summary_params(config: Mapping[str, Any]) -> dict[str, Any]:
    return {"seed": config["seed"], "report": config["report"], "targets": config["finetune"]["targets"]}


def bundle_inputs(config: Mapping[str, Any], wildcards: Any) -> dict[str, Any]:
    """What export_bundle chooses from and copies: the first seed's CNNs, the fusion fitted on their features and
    every classifier, the target's manifest (the card's data) and the robustness sweep."""
    first = SimpleNamespace(target=wildcards.target, init=wildcards.init, seed=first_seed(config))
    run = run_fields(first)

    def classifier_files(name: str) -> list[str]:
        return [
            paths.artifact(config["results"], paths.CLASSIFIER, name, features=f, clf=c, **run)
            for f in feature_sets(config)
            for c in config["classifiers"]
        ]

    return {
        "cnn": model_files(config, "metrics.json", first),
        "weights": model_files(config, "model.safetensors", first),
        "metas": model_files(config, "model.json", first),
        "fusion": paths.artifact(config["results"], paths.FUSION_TRANSFORM, **run),
        "classifiers": classifier_files("metrics.json"),
        "models": classifier_files("model.skops"),
        # the chosen model's reliability diagram goes into the bundle
        "reliability": model_files(config, "reliability.png", first) + classifier_files("reliability.png"),
        "manifest": manifest_of(config, wildcards.target),
        "robustness": paths.artifact(config["results"], paths.ROBUSTNESS_TABLE, **run),
    }


def bundle_params(config: Mapping[str, Any], wildcards: Any) -> dict[str, Any]:
    return {
        "dataset": config["datasets"][wildcards.target],
        "choose": config["bundle"],
        "stages": config["features"]["stages"],
        "bootstrap_seed": config["seed"],
    }


def bundles(config: Mapping[str, Any]) -> list[str]:
    """Every target's and init's bundle folder."""
    ft = config["finetune"]
    return [
        paths.artifact(config["results"], paths.BUNDLE, target=t, init=i) for t in ft["targets"] for i in ft["inits"]
    ]


def predict_bundle(config: Mapping[str, Any], wildcards: Any, template: str = paths.BUNDLE) -> str:
    """The bundle a configured prediction reads (`template` BUNDLE_RECORD: its record, the rule's input)."""
    entry = config["predict"][wildcards.prediction]
    return paths.artifact(config["results"], template, target=entry["target"], init=entry["init"])


def predictions(config: Mapping[str, Any]) -> list[str]:
    return [paths.artifact(config["results"], paths.PREDICTIONS, prediction=n) for n in config["predict"]]
