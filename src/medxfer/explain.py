"""Grad-CAM, Grad-CAM++ and LIME heatmaps for a fine-tuned network, and how faithful they are.

Overlays are saved at image size with the label, prediction and probability; the gallery shows true/false
positives/negatives. Faithfulness is measured, not assumed, against a smooth random map and a centre prior
(medxfer.faithfulness: localisation where a finding mask is known, deletion and insertion AUC everywhere).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image

from medxfer import cams, heatmap_choice, models, runtime
from medxfer.cache import Split, load_cached
from medxfer.faithfulness import FAITHFULNESS_COLUMNS, MapsOf, faithfulness
from medxfer.fold import fold_batchnorm
from medxfer.identity import read as read_identity
from medxfer.imaging import read_mask
from medxfer.inference import predict_proba
from medxfer.io import atomic_path, save_npz, write_json
from medxfer.log import get_logger, mark_work_start
from medxfer.metrics import decide
from medxfer.sections import ExplainSection

METHODS = tuple(cams.list_methods())


def outcomes(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """TP/FP/FN/TN for binary tasks (class 1 positive); correct/wrong for more classes."""
    if n_classes != 2:
        return np.where(labels == predicted, "correct", "wrong")
    names = np.array([["TN", "FP"], ["FN", "TP"]])
    return names[labels, predicted]


def choose_images(groups: np.ndarray, n_images: int, seed: int) -> np.ndarray:
    """Indices of up to n images, taken in turn from each group (e.g. TP, FP, FN, TN), seeded."""
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(groups == g)).tolist() for g in sorted(set(groups.tolist()))]
    chosen: list[int] = []
    while len(chosen) < min(n_images, len(groups)):
        for pool in pools:
            if pool and len(chosen) < n_images:
                chosen.append(pool.pop(0))
    return np.array(sorted(chosen), dtype=np.int64)


def overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """RGB uint8 overlay of a heatmap on the first channel of a (C, H, W) uint8 image, same size as the image."""
    gray = image[0].astype(np.float32) / 255.0
    return show_cam_on_image(np.repeat(gray[..., None], 3, axis=-1), heatmap, use_rgb=True, image_weight=0.6)


PANEL = 128  # overlay PNGs show image and heatmap side by side at least this large, under a caption


def annotated(image: np.ndarray, heatmap: np.ndarray, caption: str) -> np.ndarray:
    """RGB uint8: the image and its heatmap overlay side by side, upscaled to PANEL px, under a caption line."""
    from PIL import ImageDraw

    side = max(PANEL, image.shape[-1])
    grey = np.repeat(image[0][..., None], 3, axis=-1)
    panels = [
        Image.fromarray(a).resize((side, side), Image.Resampling.BILINEAR) for a in (grey, overlay(image, heatmap))
    ]
    band = 16
    canvas = Image.new("RGB", (2 * side, side + band), "white")
    for k, panel in enumerate(panels):
        canvas.paste(panel, (k * side, band))
    ImageDraw.Draw(canvas).text((3, 2), caption, fill="black")
    return np.asarray(canvas)


def save_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def explain_model(
    model_dir: Path,
    manifest: Path,
    images: Path,
    out_dir: Path,
    settings: ExplainSection,
    seed: int = 0,
    threads: int = 1,
    device: str = "auto",
    log_path: Path | None = None,
    faithfulness_path: Path | None = None,
) -> pd.DataFrame:
    """Write selection.json, `<method>/<image_id>.png` overlays, heatmaps.npz, index.csv, gallery.png and
    faithfulness.csv (in out_dir, or at `faithfulness_path`: the workflow keeps it outside the folder so the summary
    reads a checksummed file, not a folder whose time any copy or `dvc checkout` changes).

    `settings`: the config's `explain` section (medxfer.sections; its defaults live in the schema only). The gallery
    images are spread over true/false positives/negatives, decided as the model decides (its validation-chosen
    threshold in model.json, else argmax), and explain the predicted class; the faithfulness images (with a finding mask
    where the data set has masks) explain their true class. One call on purpose: gallery, overlays and the
    faithfulness table share one model load and one pass over the test split. The method shown first and the CAM
    layer of every CAM map are chosen on val images first (medxfer.heatmap_choice), recorded in selection.json.
    """
    logger = get_logger("medxfer.explain", log_path)
    runtime.configure(threads, seed)
    methods = settings.methods
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown explanation method(s) {sorted(unknown)}; allowed: {list(METHODS)}")
    dev = runtime.select_device(device)
    unfolded, meta = models.load(model_dir, dev)
    model = fold_batchnorm(unfolded)
    splits = load_cached(manifest, images).splits
    test = splits["test"]
    mark_work_start()
    selection = heatmap_choice.choose(model, splits["val"], settings, seed, logger, unfolded=unfolded)
    write_json(out_dir / "selection.json", selection)
    methods = [selection["method"], *(m for m in methods if m != selection["method"])]  # the chosen one first

    def maps_of(method: str, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        # CAMs draw at the layer chosen on val, pinned on the model
        return cams.heatmaps(method, model, images, targets, **settings.map_options(seed))

    index, table, decided = _gallery_table(model, test, meta, settings.n_images, seed, dev)
    _write_gallery_files(out_dir, table, test.images[index], methods, maps_of, meta, selection, model_dir, logger)
    faith = faithfulness(model, test, methods, maps_of, settings.n_faithfulness, settings.deletion_steps, seed)
    # the model's own decision per image, so the summary can score the findings it detects apart from all of them
    faith.insert(2, "predicted", faith["image_id"].map(dict(zip(test.ids.tolist(), decided.tolist(), strict=True))))
    faith = _with_identity(faith, meta, model_dir)
    faith["chosen"] = faith["method"] == selection["method"]
    checks = {"sanity": heatmap_choice.sanity_of, "beats_random_on_val": heatmap_choice.beats_random_on_val}
    for column, check in checks.items():
        faith[column] = faith["method"].map(lambda method, check=check: check(selection, method))
    with atomic_path(faithfulness_path or out_dir / "faithfulness.csv") as tmp:
        faith.to_csv(tmp, index=False)
    means = faith.groupby("method", sort=False)[FAITHFULNESS_COLUMNS[4:]].mean()
    logger.info("faithfulness of %s on %d test images:\n%s", model_dir, faith["image_id"].nunique(), means.round(3))
    return table


def _gallery_table(
    model: torch.nn.Module, test: Split, meta: Mapping[str, Any], n_images: int, seed: int, device: torch.device
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """The gallery's test indices and rows, spread over outcomes decided as the model decides (its validation-chosen
    threshold in model.json, else argmax), so the gallery shows the errors the model really makes; and that
    decision for every test image."""
    proba_all = predict_proba(model, test.images, device)
    predicted_all = decide(proba_all, (meta.get("decision") or {}).get("threshold"))
    outcome_all = outcomes(test.labels, predicted_all, len(meta["classes"]))
    index = choose_images(outcome_all, n_images, seed)
    predicted = predicted_all[index]
    table = pd.DataFrame(
        {
            "image_id": test.ids[index],
            "label": test.labels[index],
            "prediction": predicted,
            "probability": proba_all[index, predicted],
            "outcome": outcome_all[index],
            "mask": test.masks[index],
            "box": test.boxes[index] if test.boxes is not None else "",
        }
    )
    return index, table, predicted_all


def _write_gallery_files(
    out_dir: Path,
    table: pd.DataFrame,
    images: np.ndarray,
    methods: Sequence[str],
    maps_of: MapsOf,
    meta: Mapping[str, Any],
    selection: Mapping[str, Any],
    model_dir: Path,
    logger: Any,
) -> None:
    """Per method the overlays of the gallery images (maps of the predicted class), then heatmaps.npz, gallery.png
    and index.csv, written last because its `<method>_png` columns are the overlays' paths."""
    predicted = table["prediction"].to_numpy()
    heatmaps = {}
    for method in methods:
        heatmaps[method] = maps_of(method, images, predicted)
        table[f"{method}_png"] = _write_overlays(out_dir, method, table, images, heatmaps[method], meta["classes"])
        logger.info("%s: %d %s overlays for %s", meta["arch"], len(table), method, model_dir)
    save_npz(out_dir / "heatmaps.npz", ids=table["image_id"].to_numpy(str), images=images, **heatmaps)
    title = f"{meta['arch']} ({meta['init']}); chosen on val: {selection['method']}, CAM layer {selection['layer']}"
    if not selection["beats_random_on_val"]:
        title += "\nno better than a smooth random map on val images: not evidence of what the model uses"
    _gallery(out_dir / "gallery.png", images, table, heatmaps, meta["classes"], title)
    with atomic_path(out_dir / "index.csv") as tmp:
        table.to_csv(tmp, index=False)


def _with_identity(faith: pd.DataFrame, meta: Mapping[str, Any], model_dir: Path) -> pd.DataFrame:
    """The faithfulness rows led by which model they score (target, init, arch), for the summary; a pretraining
    checkpoint has no identity and its rows stay as they are."""
    if "identity" not in meta:
        return faith
    ident = read_identity(meta, model_dir / models.META_FILE, "features")
    columns = pd.DataFrame({"target": ident["target"], "init": ident["run"], "arch": meta["arch"]}, index=faith.index)
    return pd.concat([columns, faith], axis=1)


def _write_overlays(
    out_dir: Path, method: str, table: pd.DataFrame, images: np.ndarray, maps: np.ndarray, classes: list[str]
) -> list[str]:
    """`<method>/<image_id>.png` per gallery image, captioned with label, prediction and outcome; their paths."""
    paths = []
    for record, image, heat in zip(table.itertuples(), images, maps, strict=True):
        path = out_dir / method / f"{record.image_id}.png"
        caption = (
            f"{method} | label {classes[record.label]} | pred {classes[record.prediction]}"
            f" p={record.probability:.2f} ({record.outcome})"
        )
        save_png(path, annotated(image, heat, caption))
        paths.append(str(path.relative_to(out_dir)))
    return paths


def _gallery(
    path: Path, images: np.ndarray, table: pd.DataFrame, heatmaps: dict[str, np.ndarray], classes: list[str], title: str
) -> None:
    """A row per gallery image: the image, then each method's overlay; where the data set annotates the finding, its
    outline (cyan) and box (yellow) on every panel, so a reader sees whether the heat falls on it."""
    cols = 1 + len(heatmaps)
    from matplotlib.figure import Figure  # no pyplot: no global backend state, no GUI

    fig = Figure(figsize=(2.2 * cols, 2.3 * len(table)))
    axes = fig.subplots(len(table), cols, squeeze=False)
    size = images.shape[-1]
    for row, record in enumerate(table.itertuples()):
        axes[row, 0].imshow(images[row, 0], cmap="gray")
        axes[row, 0].set_title(
            f"{record.outcome}: label {classes[record.label]}\npred {classes[record.prediction]}"
            f" p={record.probability:.2f}",
            fontsize=7,
        )
        for col, (method, maps) in enumerate(heatmaps.items(), start=1):
            axes[row, col].imshow(overlay(images[row], maps[row]))
            axes[row, col].set_title(method + (" (chosen)" if col == 1 else ""), fontsize=7)
        for outline, colour in ((read_mask(record.mask, size), "cyan"), (read_mask(record.box, size), "yellow")):
            if outline is not None and outline.any():  # the finding as annotated: its outline and its box
                for ax in axes[row]:
                    ax.contour(outline, levels=[0.5], colors=colour, linewidths=0.7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
