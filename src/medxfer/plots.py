"""Every figure medxfer draws, on matplotlib's object-oriented API.

No pyplot and no `matplotlib.use`: a Figure of its own needs no global backend state or GUI, and matplotlib is
imported only when a figure is drawn, so importing this module (as classify and robustness jobs do) stays cheap.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medxfer.identity import read as read_identity
from medxfer.io import atomic_path, read_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(
    nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (3.2, 3.0), dpi: float = 100, **subplots: Any
) -> tuple[Figure, Any]:
    """A figure and its axes (as Figure.subplots returns them), at the size and resolution of every medxfer plot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols, **subplots)


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Lay out and write a PNG atomically, so a killed job never leaves a half-written plot behind."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_roc(roc: pd.DataFrame, auc: float, path: str | os.PathLike, title: str) -> None:
    """A small ROC plot from roc_points() output, one line per (one-vs-rest) class."""
    fig, ax = new_figure()
    for name, curve in roc.groupby("class", sort=False):
        ax.plot(curve["fpr"], curve["tpr"], label=str(name))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
    missing = auc is None or (isinstance(auc, float) and math.isnan(auc))
    ax.set_title(f"{title}\nAUC {auc:.3f}" if not missing else title, fontsize=7)
    if len(roc):
        ax.legend(fontsize=6, loc="lower right")
    save_figure(fig, path)


def plot_reliability(split: dict[str, Any], after: str, path: str | os.PathLike, title: str) -> None:
    """Reliability diagram of one split before and after calibration (medxfer.calibration's bins; `after` names the
    calibration, e.g. "T = 1.20"): mean confidence against accuracy per bin, the diagonal where they agree, ECE in
    the legend."""
    fig, ax = new_figure()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for key, label, marker in (("before", "raw", "o"), ("after", after, "s")):
        bins = [b for b in split[key]["reliability"] if b["n"]]
        ece = split[key]["ece"]
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            marker=marker,
            markersize=3,
            label=f"{label}, ECE {ece:.3f}" if ece is not None else label,
        )
    ax.set(xlabel="confidence (top class)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(title, fontsize=7)
    ax.legend(fontsize=6, loc="upper left")
    save_figure(fig, path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | os.PathLike, title: str) -> None:
    """Confusion matrix counts (rows true, columns predicted)."""
    fig, ax = new_figure()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(int(count)), ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(len(classes)), classes, fontsize=7, rotation=30)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=7)
    save_figure(fig, path)


def plot_faithfulness(means: pd.DataFrame, path: str | os.PathLike) -> None:
    """Bars per method, baselines included (one colour per target), for each faithfulness measure in [0, 1]."""
    better = {m: "higher" for m in ("pointing_hit", "pointing_hit_tol", "energy_in_box", "iou", "pixel_auc")}
    better |= {"deletion_auc": "lower", "insertion_auc": "higher", "blurred_deletion_auc": "lower"}
    measures = [m for m in better if m in means]
    methods = list(dict.fromkeys(means["method"]))
    targets = list(dict.fromkeys(means["target"]))
    fig, axes = new_figure(1, len(measures), figsize=(2.6 * len(measures), 2.8))
    width = 0.8 / max(1, len(targets))
    for ax, measure in zip(axes, measures, strict=True):
        for k, target in enumerate(targets):
            part = means[means["target"] == target].set_index("method").reindex(methods)
            ax.bar(np.arange(len(methods)) + k * width, part[measure].fillna(0), width, label=str(target))
        ax.set_xticks(np.arange(len(methods)) + width * (len(targets) - 1) / 2, methods, fontsize=7, rotation=20)
        ax.set_title(f"{measure} ({better[measure]} is better)", fontsize=7)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    save_figure(fig, path)


def plot_training_curves(log_paths: Sequence[str | os.PathLike], path: str | os.PathLike, title: str) -> None:
    """Train/val loss and val AUC per epoch, one line per fine-tuned model: each log.csv sits in its model's folder,
    whose model.json names the run and architecture."""
    fig, axes = new_figure(1, 2, figsize=(7.0, 2.8))
    for log_path in log_paths:
        log_path = Path(log_path)
        history = pd.read_csv(log_path)
        meta = read_json(log_path.with_name("model.json"))
        init, arch = read_identity(meta, log_path.with_name("model.json"))["run"], meta["arch"]
        line = axes[0].plot(history["epoch"], history["train_loss"], label=f"{init}/{arch} train")[0]
        axes[0].plot(history["epoch"], history["val_loss"], linestyle="--", color=line.get_color(), label="val")
        axes[1].plot(history["epoch"], history["val_roc_auc"], marker="o", markersize=3, label=f"{init}/{arch}")
    axes[0].set(xlabel="epoch", ylabel="loss (dashed: val)")
    axes[1].set(xlabel="epoch", ylabel="val ROC AUC", ylim=(0, 1.02))
    axes[1].legend(fontsize=6)
    for ax in axes:
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
