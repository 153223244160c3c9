"""A self-contained model bundle: everything predicting on new images needs, in one folder that says what it is.

Like a MONAI bundle, the folder carries its own metadata (bundle.json: identity, preprocessing, classes, decision
threshold, calibration, metrics, data, versions and a digest of every file) and a short card (model_card.md).
A bundle is the model chosen on validation data for one target and init (medxfer.selection's rule, as the headline
table), never on test: a fine-tuned CNN with its own head, or a classifier on one CNN's or the fused features. It
holds copies, not links, so it predicts the same when copied away from the results tree.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medxfer.identity import read as read_identity
from medxfer.io import read_json, sha256_file, write_json, write_text
from medxfer.metrics import N_BOOTSTRAP, ORDINAL_METRICS
from medxfer.runrecord import package_versions
from medxfer.sections import BundleSection, dataset_entry
from medxfer.selection import best_row, selection_auc

FORMAT = "medxfer-bundle/1"
META_FILE = "bundle.json"
CARD_FILE = "model_card.md"
CNN_DIR = "cnn"
FUSION_FILE = "fusion.skops"
CLASSIFIER_FILE = "classifier.skops"
RELIABILITY_FILE = "reliability.png"
CNN_FILES = ("model.safetensors", "model.json")
# the graded ones only where the model's data set is ordinal (its metrics.json has them)
METRICS = (
    *("accuracy", "balanced_accuracy", "roc_auc", "cohen_kappa", "f1", "sensitivity", "specificity"),
    *ORDINAL_METRICS,
)


def headline_candidate(ident: Mapping[str, Any]) -> bool:
    """What the headline table picks from: a CNN's own head, or a classifier on the fused features."""
    return ident["classifier"] == "cnn" or ident["features"] == "fused"


def choose_model(
    metrics_paths: Sequence[str | os.PathLike], features: str | None = None, classifier: str | None = None
) -> Path:
    """The metrics.json of the model with the highest val AUC among the candidates (never a test number).

    Without `features`/`classifier`, the headline's candidates; either one narrows the choice to the models it names.
    """
    named = {k: v for k, v in (("features", features), ("classifier", classifier)) if v is not None}
    rows = []
    for path in map(Path, metrics_paths):
        metrics = read_json(path)
        ident = read_identity(metrics, path, "features", "classifier")
        wanted = all(ident[k] == v for k, v in named.items()) if named else headline_candidate(ident)
        if wanted:
            rows.append({"path": str(path), "selection_auc": selection_auc(metrics)})
    best = best_row(pd.DataFrame(rows, columns=["path", "selection_auc"]))
    if best is None:
        raise ValueError(f"no model to bundle among {len(metrics_paths)} results (asked for: {named or 'headline'})")
    return Path(best["path"])


def _split_counts(manifest: Path) -> dict[str, Any]:
    """Images, studies and class counts per split, and the manifest's digest: what the card says about the data."""
    table = pd.read_csv(manifest, dtype=str)
    out: dict[str, Any] = {"manifest_sha256": sha256_file(manifest)}
    for split, rows in table.groupby("split", sort=False):
        out[str(split)] = {
            "images": len(rows),
            "studies": int(rows["study_id"].nunique()),
            "classes": {str(k): int(v) for k, v in rows["label_name"].value_counts().sort_index().items()},
        }
    return out


def _test_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Point values with their 95 % intervals at image level, and at study level where studies group images."""

    def level(source: Mapping[str, Any]) -> dict[str, Any]:
        ci = source.get("ci", {})
        return {"n": source.get("n")} | {m: {"value": source.get(m), "ci95": ci.get(m)} for m in METRICS if m in source}

    out = {"image": level(metrics)}
    if "accuracy" in metrics.get("study", {}):
        out["study"] = level(metrics["study"])
    if "val" in metrics:
        out["val"] = {m: metrics["val"].get(m) for m in METRICS if m in metrics["val"]}
    return out


def _robustness(table_path: Path | None, model_name: str) -> list[dict[str, Any]] | None:
    """The chosen model's rows of the robustness sweep (accuracy and AUC per perturbation and severity)."""
    if table_path is None or not Path(table_path).is_file():
        return None
    table = pd.read_csv(table_path)
    rows = table[table["model"] == model_name]
    keep = ["perturbation", "severity", "level", "accuracy", "roc_auc", "cohen_kappa"]
    return rows[keep].to_dict("records") if len(rows) else None


def _preprocessing(dataset: Mapping[str, Any], cnn_meta: Mapping[str, Any]) -> dict[str, Any]:
    """How a raw file becomes the model's input: medxfer.imaging.load_image with these settings, then the model's
    normalisation."""
    return {
        "modality": dataset["modality"],
        "size": int(dataset["size"]),
        "channels": int(cnn_meta["in_chans"]),
        "windows": dataset["windows"] if dataset["modality"] == "ct" else None,
        "min_image_side": int(dataset["min_image_side"]),
        "assume_rescale": dataset["assume_rescale"],
        "normalization": cnn_meta["normalization"],
    }


def export_bundle(
    metrics_paths: Sequence[str | os.PathLike],
    model_dirs: Sequence[str | os.PathLike],
    fusion_path: str | os.PathLike,
    manifest: str | os.PathLike,
    dataset: Mapping[str, Any],
    out_dir: str | os.PathLike,
    stages: int,
    choose: BundleSection,
    record: str | os.PathLike | None = None,
    robustness_table: str | os.PathLike | None = None,
    n_bootstrap: int = N_BOOTSTRAP,
    bootstrap_seed: int = 0,
) -> dict[str, Any]:
    """Write the bundle of the model chosen among `metrics_paths` (one run's CNNs and classifiers) to `out_dir`.

    `model_dirs`: every CNN of the run, in the order the fusion was fitted (finetune.archs); `fusion_path`: the
    transform extract_features fitted on their train features (medxfer.fusion.save_fusion), copied as it is;
    `stages`: features.stages, as the features were extracted.
    `choose`: the config's `bundle` section; `dataset`: the target's config entry (keys it leaves out take the
    schema's defaults).
    `bootstrap_seed`: the report's, for intervals a metrics file lacks. `record`: a small JSON beside the folder with
    the digest of its bundle.json, which changes exactly when the bundle does (a rule downstream reads it: Snakemake
    checksums files, but only times folders).
    Long on purpose: bundle.json's fields are listed in one place, in the order a reader meets them.
    """
    from medxfer.card import model_card  # the card's wording stays out of the bundle's logic
    from medxfer.results import metrics_with_intervals

    dataset = dataset_entry(dataset)
    named = {k: v for k, v in choose.as_dict().items() if v is not None}
    chosen = choose_model(metrics_paths, choose.features, choose.classifier)
    metrics = metrics_with_intervals(chosen, n_bootstrap, bootstrap_seed)
    ident = read_identity(metrics, chosen, "features", "classifier")
    metas = {Path(d): read_json(Path(d) / "model.json") for d in model_dirs}
    archs = {meta["arch"]: d for d, meta in metas.items()}
    fused = ident["features"] == "fused"
    used = list(archs) if fused else [ident["features"]]
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a bundle is written whole: nothing of an earlier choice may stay
    for arch in used:
        for name in CNN_FILES:
            (out_dir / CNN_DIR / arch).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archs[arch] / name, out_dir / CNN_DIR / arch / name)
    if fused:
        shutil.copyfile(fusion_path, out_dir / FUSION_FILE)
    if ident["classifier"] != "cnn":
        shutil.copyfile(chosen.with_name("model.skops"), out_dir / CLASSIFIER_FILE)
    if chosen.with_name(RELIABILITY_FILE).is_file():  # test calibration before and after, drawn by the model's job
        shutil.copyfile(chosen.with_name(RELIABILITY_FILE), out_dir / RELIABILITY_FILE)
    cnn_meta = metas[archs[used[0]]]
    model_name = f"fused/{ident['classifier']}" if fused else ident["features"]
    meta: dict[str, Any] = {
        "format": FORMAT,
        "identity": ident,
        "chosen_by": {
            "rule": "highest val AUC",
            "val_auc": selection_auc(metrics),
            "among": named or "headline candidates",
        },
        "classes": list(cnn_meta["classes"]),
        "predictor": {
            "cnns": used,
            "features_stages": int(stages),
            "fusion": fused,
            "classifier": None if ident["classifier"] == "cnn" else ident["classifier"],
            "mirror": ident["classifier"] == "cnn" and bool(cnn_meta.get("config", {}).get("tta")),  # finetune.tta
        },
        "decision": metrics.get("decision", {"rule": "argmax", "threshold": metrics.get("threshold")}),
        "preprocessing": _preprocessing(dataset, cnn_meta),
        "calibration": _calibration(metrics),
        "metrics": {"test": _test_metrics(metrics)},
        "data": _split_counts(Path(manifest)),
        "robustness": _robustness(Path(robustness_table) if robustness_table else None, model_name),
        "training": {arch: metas[archs[arch]].get("config") for arch in used},
        "versions": package_versions(),
    }
    meta["files"] = {
        str(p.relative_to(out_dir).as_posix()): sha256_file(p) for p in sorted(out_dir.rglob("*")) if p.is_file()
    }
    write_json(out_dir / META_FILE, meta)
    write_text(out_dir / CARD_FILE, model_card(meta))
    if record is not None:
        write_json(record, {"bundle": out_dir.name, "identity": ident, META_FILE: sha256_file(out_dir / META_FILE)})
    return meta


def _calibration(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What calibrates the bundle's probabilities and its test ECE and Brier score before and after: a CNN head's
    temperature (fitted on val), a classifier's recalibration map (chosen on out-of-fold predictions)."""
    found = metrics.get("calibration")
    if not found:
        return {"temperature": None, "note": "The model records no calibration (made before calibration existed)."}
    out: dict[str, Any] = {"test": {w: {k: found["test"][w][k] for k in ("ece", "brier")} for w in ("before", "after")}}
    if metrics["identity"]["classifier"] == "cnn":
        return out | {"temperature": found["temperature"], "fitted_on": found.get("fitted_on", "val")}
    return out | {"temperature": None, "recalibration": found.get("mapping"), "chosen_on": found.get("chosen_on")}


@dataclass
class Bundle:
    """A loaded bundle: its metadata, CNNs, fusion and classifier, ready to score preprocessed images."""

    path: Path
    meta: dict[str, Any]
    cnns: list[Any]
    fusion: Any
    classifier: Any
    device: Any
    runtime: str = "torch"

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.meta["preprocessing"])

    @property
    def threshold(self) -> float | None:
        return self.meta["decision"].get("threshold")

    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """`proba`: class probabilities as the workflow computed them for its test predictions (what the threshold
        was chosen on); `calibrated`: the CNN head's temperature-scaled ones, when it has a temperature."""
        import torch

        from medxfer.calibration import recalibrated, scaled_proba
        from medxfer.classify import classifier_proba
        from medxfer.features import features_and_proba
        from medxfer.inference import predict_logits, softmax_proba

        predictor = self.meta["predictor"]
        head = predictor["classifier"] is None
        mirror = bool(predictor.get("mirror"))  # the CNN head's test-time augmentation, as it was scored
        if self.runtime == "onnx":
            passes = [cnn(images, batch_size) for cnn in self.cnns]
            logits, blocks = torch.from_numpy(passes[0][0]), [feats for _, feats in passes]
            if mirror:
                flipped = np.ascontiguousarray(images[..., ::-1])
                logits = (logits + torch.from_numpy(self.cnns[0](flipped, batch_size)[0])) / 2
        elif head:
            logits = predict_logits(self.cnns[0], images, self.device, batch_size, mirror=mirror)
        else:
            stages = predictor["features_stages"]
            blocks = [features_and_proba(m, images, self.device, batch_size, stages)[0] for m in self.cnns]
        if head:
            out = {"proba": softmax_proba(logits)}
            temperature = self.meta["calibration"].get("temperature")
            if temperature is not None and len(logits):
                out["calibrated"] = scaled_proba(logits.numpy(), temperature)
            return out
        if self.fusion is not None:
            x = self.fusion.transform([b.astype(np.float64) for b in blocks]).astype(np.float32)  # as the fused file
        else:
            x = blocks[0]
        out = {"proba": classifier_proba(self.classifier, x, len(self.classes))}
        mapping = self.meta["calibration"].get("recalibration")
        if mapping is not None:
            out["calibrated"] = recalibrated(mapping, out["proba"])
        return out

    def torch_cnn(self, index: int = 0) -> Any:
        """The CNN as a torch module (heatmaps need gradients, whichever runtime predicts)."""
        from medxfer import models

        if self.runtime == "torch":
            return self.cnns[index]
        return models.load(self.path / CNN_DIR / self.meta["predictor"]["cnns"][index], self.device, fold=True)[0]

    def predict(self, source: str | os.PathLike, out_dir: str | os.PathLike, **options: Any) -> dict[str, Any]:
        """Predict on a folder, CSV manifest or file and write the tables (medxfer.predict.predict's options)."""
        from medxfer.predict import predict

        return predict(self, source, out_dir, **options)

    def decide(self, proba: np.ndarray) -> np.ndarray:
        from medxfer.metrics import decide

        return decide(proba, self.threshold)


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """bundle.json, after checking that every file it lists is there with the digest it records."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: not a medxfer bundle (no {META_FILE})")
    meta = read_json(meta_path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, this medxfer reads {FORMAT!r}")
    for name, digest in meta["files"].items():
        file = path / name
        if not file.is_file():
            raise FileNotFoundError(f"{path}: bundle file {name} is missing")
        if sha256_file(file) != digest:
            raise ValueError(f"{file}: its content differs from the digest in {META_FILE}; the bundle was altered")
    return meta


def load(path: str | os.PathLike, device: str = "auto", threads: int | None = None, runtime: str = "torch") -> Bundle:
    """A bundle ready to predict, its files checked against their digests first. `runtime`: torch, or onnx for the
    CNNs `medxfer export-onnx` wrote (onnxruntime on the CPU)."""
    from medxfer import models
    from medxfer import runtime as torch_runtime
    from medxfer.classifiers import load_classifier
    from medxfer.fusion import load_fusion

    path = Path(path)
    meta = verify(path)
    if threads is not None:
        torch_runtime.configure(threads, seed=0)
    dev = torch_runtime.select_device(device)
    if runtime not in ("torch", "onnx"):
        raise ValueError(f"runtime {runtime!r}: use torch or onnx")
    cnns = []
    for arch in meta["predictor"]["cnns"]:
        cnn_meta = read_json(path / CNN_DIR / arch / "model.json")
        if list(cnn_meta["classes"]) != list(meta["classes"]):
            raise ValueError(f"{path / CNN_DIR / arch}: classes {cnn_meta['classes']} differ from {meta['classes']}")
        if runtime == "torch":
            cnns.append(models.load(path / CNN_DIR / arch, dev, fold=True)[0])
    if runtime == "onnx":
        from medxfer.onnx_export import onnx_cnns

        cnns = onnx_cnns(path, meta, threads or 1)
    fusion = None
    if meta["predictor"]["fusion"]:
        fusion = load_fusion(path / FUSION_FILE)
    classifier = None
    if meta["predictor"]["classifier"] is not None:
        classifier = load_classifier(path / CLASSIFIER_FILE)
    return Bundle(path, meta, cnns, fusion, classifier, dev, runtime)


__all__ = ["Bundle", "choose_model", "export_bundle", "headline_candidate", "load", "verify"]
