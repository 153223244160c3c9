"""How accuracy and AUC fall when test images get worse: noise, blur, brightness, contrast, rotation, JPEG, HU window.

Each fine-tuned CNN (its own softmax head) and the best fused classifier (picked by out-of-fold AUC on val, never by
test) see the same perturbed test images; the fused classifier gets them through the fine-tuned CNNs' features
and the fusion transform extract_features fitted on the train features (medxfer.fusion), as at training time.

The HU-window shift (CT only) is exact, not approximated: the cache holds windowed uint8 images, so the test
slices are decoded again from their raw HU values (DICOM or HU arrays) with every window centre moved up by the
given number of HU, as a scanner or protocol with a different calibration or window preset would show them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as tvf

from medxfer import models, runtime
from medxfer.cache import Split, image_files, load_cached
from medxfer.classifiers import load_classifier
from medxfer.classify import classifier_proba
from medxfer.features import features_and_proba
from medxfer.fusion import load_fusion
from medxfer.identity import read as read_identity
from medxfer.imaging import load_image, withheld_warnings
from medxfer.ingest import read_manifest
from medxfer.io import atomic_path, read_json
from medxfer.log import get_logger, mark_work_start
from medxfer.metrics import classification_metrics
from medxfer.plots import new_figure, save_figure
from medxfer.sections import FeaturesSection, RobustnessSection, dataset_entry
from medxfer.selection import best_row, selection_auc

# perturbation -> (what the level means, the level at severity 1, 2, 3)
LEVELS: dict[str, tuple[str, tuple[float, ...]]] = {
    "noise": ("gaussian sigma (intensity 0-1)", (0.04, 0.08, 0.16)),
    "blur": ("gaussian sigma (fraction of the side)", (0.01, 0.02, 0.04)),
    "brightness": ("added to intensity 0-1", (0.1, 0.2, 0.35)),
    "contrast": ("factor around the image mean", (0.75, 0.5, 0.3)),
    "rotation": ("degrees", (5.0, 15.0, 30.0)),
    "jpeg": ("JPEG quality", (50.0, 25.0, 10.0)),
    "hu_window": ("window centre shift (HU)", (25.0, 50.0, 100.0)),
}
PERTURBATIONS = tuple(LEVELS)
CT_ONLY = ("hu_window",)
METRICS = ("accuracy", "roc_auc", "cohen_kappa")


def perturb(images: np.ndarray, kind: str, level: float, seed: int = 0) -> np.ndarray:
    """A perturbed copy of uint8 (N, C, H, W) images (every channel alike); hu_window needs raw data: see hu_shift."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    n, c, h, w = x.shape
    if kind == "jpeg":
        return np.stack([_jpeg(image, int(level)) for image in images]) if n else images.copy()
    f = x.float() / 255.0
    if kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        f = f + level * torch.randn(f.shape, generator=generator)
    elif kind == "blur":
        sigma = max(level * w, 1e-3)
        kernel = 2 * int(np.ceil(3 * sigma)) + 1
        f = tvf.gaussian_blur(f, kernel_size=[kernel, kernel], sigma=[sigma, sigma])
    elif kind == "brightness":
        f = f + level
    elif kind == "contrast":
        mean = f.mean(dim=(2, 3), keepdim=True)
        f = mean + level * (f - mean)
    elif kind == "rotation":
        f = tvf.rotate(f, angle=level, interpolation=tvf.InterpolationMode.BILINEAR, fill=0.0)
    else:
        raise ValueError(f"unknown perturbation '{kind}'; allowed: {list(PERTURBATIONS)}")
    return (f.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Each channel through an 8-bit greyscale JPEG encode/decode at `quality` (PIL's libjpeg)."""
    out = []
    for channel in image:
        buffer = io.BytesIO()
        Image.fromarray(channel).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L")))
    return np.stack(out)


def hu_shift(dataset: Mapping[str, Any], manifest: Path, image_ids: Sequence[str], shift: float) -> np.ndarray:
    """The given images decoded again from raw HU with every window centre moved by `shift` HU, as the cache decoded
    them otherwise. `dataset`: its config entry (keys it leaves out take the schema's defaults)."""
    dataset = dataset_entry(dataset)
    if dataset["modality"] != "ct":
        raise ValueError("a HU-window shift needs a CT data set (modality: ct)")
    table = read_manifest(manifest).set_index("image_id").loc[list(image_ids)]
    windows = [[center + shift, width] for center, width in dataset["windows"]]
    size, files = dataset["size"], image_files(dataset, list(table["path"]))
    settings = {"min_side": dataset["min_image_side"], "assume_rescale": dataset["assume_rescale"]}
    with withheld_warnings():  # pydicom quotes header values; ingest has logged these files' warnings already
        images = [load_image(file, "ct", windows, size, **settings) for file in files]
    return np.stack(images) if images else np.zeros((0, len(windows), size, size), np.uint8)


def best_fused(metrics_paths: Sequence[str | os.PathLike]) -> Path:
    """The fused classifier with the highest out-of-fold val AUC (medxfer.selection's rule; never the test split)."""
    rows = [{"path": str(p), "selection_auc": selection_auc(read_json(p))} for p in metrics_paths]
    best = best_row(pd.DataFrame(rows, columns=["path", "selection_auc"]))
    if best is None:
        raise ValueError("no fused classifier results to choose from")
    return Path(best["path"])


def assess_robustness(
    model_dirs: Sequence[Path],
    fusion_path: Path,
    classifier_metrics: Sequence[Path],
    manifest: Path,
    images: Path,
    dataset: Mapping[str, Any],
    out_csv: Path,
    out_plot: Path,
    robustness: RobustnessSection,
    features: FeaturesSection,
    seed: int = 0,
    threads: int = 1,
    device: str = "auto",
    log_path: Path | None = None,
) -> pd.DataFrame:
    """Accuracy, ROC AUC and kappa of each CNN and the best fused classifier per perturbation and severity.

    Severity 0 is the clean test split. `robustness` and `features`: the config's sections of those names
    (medxfer.sections), the latter as the features were extracted. `fusion_path`: the transform extract_features
    fitted on these CNNs' train features (medxfer.fusion.save_fusion); `classifier_metrics` are the fused
    classifiers' metrics.json files (their model.skops beside them). hu_window runs only on CT data sets.
    One call for every model: each scores the same perturbed batch, made once per perturbation and severity.
    `dataset`: the target's config entry (keys it leaves out take the schema's defaults).
    """
    dataset = dataset_entry(dataset)
    logger = get_logger("medxfer.robustness", log_path)
    runtime.configure(threads, seed)
    dev = runtime.select_device(device)
    severities = robustness.severities
    perturbations = _applicable(robustness.perturbations, severities, dataset)
    data = load_cached(manifest, images)
    test = data.splits["test"]
    cnns = _load_cnns(model_dirs, dev, data.classes)
    fused = load_fusion(fusion_path)
    mark_work_start()
    n_classes = len(data.classes)
    best = best_fused(classifier_metrics)
    classifier = load_classifier(best.with_name("model.skops"))
    best_identity = read_identity(read_json(best), best, "features", "classifier")
    fused_name = f"fused/{best_identity['classifier']}"
    thresholds = _thresholds(cnns, model_dirs, fused_name, best)

    def scores(batch: np.ndarray) -> dict[str, np.ndarray]:
        passes = [features_and_proba(model, batch, dev, features.batch_size, features.stages) for model, _ in cnns]
        out = {meta["arch"]: proba for (_, meta), (_, proba) in zip(cnns, passes, strict=True)}
        out[fused_name] = classifier_proba(classifier, fused.transform([feats for feats, _ in passes]), n_classes)
        return out

    rows = []
    for kind, severity, level, batch in _perturbed_batches(test, perturbations, severities, dataset, manifest, seed):
        scored = _metric_rows(scores(batch), test.labels, thresholds, kind, severity, level)
        rows += scored
        accuracy = {r["model"]: round(r["accuracy"], 3) for r in scored}
        logger.info("%s severity %d (%s): %s", kind, severity, level, accuracy)
    table = pd.DataFrame(rows)
    with atomic_path(out_csv) as tmp:
        table.round(4).to_csv(tmp, index=False)
    plot_robustness(table, out_plot, f"{best_identity['target']} / {best_identity['run']} init")
    return table


def _applicable(perturbations: Sequence[str], severities: Sequence[int], dataset: Mapping[str, Any]) -> list[str]:
    """The requested perturbations less the CT-only ones on other modalities (their raw data has no HU to shift);
    an unknown perturbation or a severity outside 1-3 is an error before any model loads."""
    unknown = set(perturbations) - set(PERTURBATIONS)
    if unknown or any(s not in (1, 2, 3) for s in severities):
        raise ValueError(
            f"perturbations {sorted(unknown)} / severities {list(severities)} not allowed: use "
            f"{list(PERTURBATIONS)} and 1, 2, 3"
        )
    if dataset["modality"] != "ct":
        return [p for p in perturbations if p not in CT_ONLY]
    return list(perturbations)


def _load_cnns(
    model_dirs: Sequence[Path], device: torch.device, classes: list[str]
) -> list[tuple[torch.nn.Module, dict]]:
    """Each CNN with its model.json; a CNN whose classes differ from the data set's would be scored against the
    wrong labels, so that is an error."""
    cnns = [models.load(d, device, fold=True) for d in model_dirs]
    for (_, meta), path in zip(cnns, model_dirs, strict=True):
        if list(meta["classes"]) != classes:
            raise ValueError(f"{path}: model classes {meta['classes']} differ from data set classes {classes}")
    return cnns


def _perturbed_batches(
    test: Split,
    perturbations: Sequence[str],
    severities: Sequence[int],
    dataset: Mapping[str, Any],
    manifest: Path,
    seed: int,
) -> Iterator[tuple[str, int, float, np.ndarray]]:
    """(perturbation, severity, level, test images): the clean split first (severity 0), then every perturbation and
    severity, each batch made when the sweep reaches it rather than all up front."""
    variants = [("none", 0, 0.0)] + [(p, s, LEVELS[p][1][s - 1]) for p in perturbations for s in severities]
    for kind, severity, level in variants:
        if kind == "none":
            batch = test.images
        elif kind == "hu_window":
            batch = hu_shift(dataset, manifest, test.ids, level)
        else:
            batch = perturb(test.images, kind, level, seed)
        yield kind, severity, level, batch


def _metric_rows(
    probas: Mapping[str, np.ndarray],
    labels: np.ndarray,
    thresholds: Mapping[str, float | None],
    kind: str,
    severity: int,
    level: float,
) -> list[dict[str, Any]]:
    """One robustness.csv row per model for one perturbed batch, each model deciding with its own threshold."""
    rows = []
    for name, proba in probas.items():
        metrics = classification_metrics(labels, proba, thresholds[name])
        rows.append(
            {"model": name, "perturbation": kind, "severity": severity, "level": level}
            | {m: metrics[m] for m in METRICS}
            | {"n": metrics["n"]}
        )
    return rows


def _thresholds(
    cnns: Sequence[tuple[torch.nn.Module, dict]], model_dirs: Sequence[Path], fused_name: str, fused_metrics: Path
) -> dict[str, float | None]:
    """Each model's decision threshold by name, so it decides on perturbed images as it did on the clean test split:
    its own validation-chosen threshold, if any."""
    thresholds = {
        meta["arch"]: _threshold(Path(d) / "metrics.json") for (_, meta), d in zip(cnns, model_dirs, strict=True)
    }
    thresholds[fused_name] = _threshold(fused_metrics)
    return thresholds


def _threshold(metrics_path: Path) -> float | None:
    """The decision threshold recorded in a model's metrics.json (written by the same job as the model)."""
    return read_json(metrics_path).get("threshold") if Path(metrics_path).is_file() else None


def plot_robustness(table: pd.DataFrame, path: Path, title: str) -> None:
    """Accuracy and AUC vs severity: one panel per perturbation, one line per model, severity 0 = clean."""
    kinds = [k for k in table["perturbation"].unique() if k != "none"]
    fig, axes = new_figure(2, max(1, len(kinds)), figsize=(2.3 * max(1, len(kinds)), 4.6), squeeze=False)
    clean = table[table["perturbation"] == "none"]
    for col, kind in enumerate(kinds):
        part = pd.concat([clean, table[table["perturbation"] == kind]])
        for row, metric in enumerate(("accuracy", "roc_auc")):
            ax = axes[row, col]
            for model, curve in part.groupby("model", sort=False):
                ax.plot(curve["severity"], curve[metric], marker="o", markersize=3, label=model)
            ax.set_ylim(0, 1.02)
            ax.set_xticks(sorted(part["severity"].unique()))
            ax.set_title(kind if row == 0 else "", fontsize=8)
            ax.set_xlabel("severity" if row == 1 else "", fontsize=7)
            ax.set_ylabel(metric if col == 0 else "", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"robustness: {title}", fontsize=9)
    save_figure(fig, path)
