"""Which heatmap method and CAM layer a model's gallery shows: chosen on validation images, never on test.

Each configured method is drawn at each candidate layer (timm feature_info stages; LIME and occlusion have none) on
`explain.choose_on_val` val images, and scored by deletion AUC (lower = the map points at what the model uses), or,
with `explain.choose_by: pointing` on a data set with finding masks, on val images with a finding by the tolerant
pointing game (the map that points at what an expert outlined; ties go to the lower deletion AUC).
A model-randomisation sanity check (Adebayo et al. 2018) re-initialises the last feature stage and all after it: a
map that barely changes (Spearman correlation above `explain.sanity_threshold`) does not explain the model, and is not
chosen while another candidate passes. The same val images are scored with a smooth random map too: a chosen map that
does not beat it is recorded and logged, so a gallery that shows it is read with care.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from medxfer import cams, localisation, models
from medxfer.cache import Split
from medxfer.faithfulness import choose_masked, deletion_insertion
from medxfer.fold import fold_batchnorm
from medxfer.imaging import read_mask
from medxfer.sections import ExplainSection


def val_index(split: Split, n_images: int, seed: int) -> np.ndarray:
    """Up to n seeded val image indices, sorted."""
    return np.sort(np.random.default_rng(seed).permutation(len(split.labels))[:n_images])


def candidates(model: nn.Module, methods: Sequence[str], positions: Sequence[int]) -> list[tuple[str, str | None]]:
    """(method, layer name) pairs: every CAM method at every candidate stage, other methods once (layer None)."""
    layers = cams.candidate_layers(model, positions)
    return [(m, layer) for m in methods for layer in (layers if cams.uses_layer(m) else [None])]


def mean_deletion(model: nn.Module, images: np.ndarray, targets: np.ndarray, maps: np.ndarray, steps: int) -> float:
    """Mean deletion AUC of the maps for the target classes (only the deletion curve is run)."""
    pairs = zip(images, maps, targets, strict=True)
    scores = [
        deletion_insertion(model, image, heat, int(target), steps, ["deletion"])[0] for image, heat, target in pairs
    ]
    return float(np.mean(scores))


def _val_images(val: Split, settings: ExplainSection, seed: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """The val indices the choice is made on and their finding masks (None where an image has none).

    By pointing: only images with a finding mask, so every candidate is scored on findings an expert outlined."""
    if len(val.labels) == 0:
        raise ValueError("the val split is empty: the heatmap method and layer are chosen on val images")
    size = val.images.shape[-1]
    if settings.choose_by == "pointing":
        masks = [read_mask(m, size) for m in val.masks]
        has_mask = np.array([m is not None and bool(m.any()) for m in masks], dtype=bool)
        if not has_mask.any():
            raise ValueError("explain.choose_by pointing: no val image has a finding mask to point at")
        index = choose_masked(has_mask, settings.choose_on_val, seed)
        return index, [masks[i] for i in index]
    index = val_index(val, settings.choose_on_val, seed)
    return index, [read_mask(m, size) for m in val.masks[index]]


def mean_pointing(maps: np.ndarray, masks: Sequence[np.ndarray | None]) -> float | None:
    """Share of the maps whose peak lies within the tolerance of their finding mask (localisation's pointing game);
    None when no image has a mask."""
    hits = [
        localisation.pointing_hit_tolerant(heat, mask)
        for heat, mask in zip(maps, masks, strict=True)
        if mask is not None and mask.any()
    ]
    return float(np.mean(hits)) if hits else None


def top_layers(model: nn.Module) -> list[str]:
    """The last feature stage and every module with weights defined after it (timm defines modules in forward order).

    Not only the head: EfficientNet and MobileNet put a conv_head and a norm between the last stage and the head, and
    those, left as trained, turn the randomised stage's features into all-negative pre-activations. The copy's ReLU
    then outputs zeros for every image: a dead network whose maps are all constant, which tests nothing.
    """
    last = model.feature_info[-1]["module"]
    names = [name for name, _ in model.named_modules()]
    tops = [last]
    for name in names[names.index(last) + 1 :]:
        inside = any(name.startswith(top + ".") for top in tops)
        if not inside and any(True for _ in model.get_submodule(name).parameters()):
            tops.append(name)
    head = models.head_prefix(model)
    return tops if any(head == top or head.startswith(top + ".") for top in tops) else [*tops, head]


def randomised(model: nn.Module, seed: int) -> tuple[nn.Module, list[str]]:
    """A copy with the top layers (top_layers: the last feature stage and all after it) re-initialised, seeded; the
    names of what was reset."""
    copied = copy.deepcopy(model)
    tops = top_layers(copied)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in tops:
            for module in copied.get_submodule(name).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    return copied.eval(), tops


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Mean over images of the Spearman correlation of two (N, H, W) map stacks, or None when no pair compares.

    A constant map (a CAM of a randomised model is often all zero) has no ranks: its pair is left out rather than
    counted as 0, which would pass the check without testing anything.
    """
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if min(x.std(), y.std()) > 0]
    values = [float(spearmanr(x.ravel(), y.ravel()).statistic) for x, y in pairs]
    return float(np.mean(values)) if values else None


def choose(
    model: nn.Module,
    val: Split,
    settings: ExplainSection,
    seed: int,
    logger: Any = None,
    unfolded: nn.Module | None = None,
) -> dict[str, Any]:
    """Score every (method, layer) candidate on val, run the sanity check, pin the chosen CAM layer on the model.

    `unfolded`: the model as trained when `model` has its BatchNorms folded (medxfer.fold). The sanity check's copy is
    randomised from it, norms included, and then folded: re-initialising a folded convolution would give it a random
    bias where the trained architecture has a reset norm.

    Returns what selection.json records: the chosen method, the CAM layer every CAM map then uses, n_val, what
    chose (`chosen_by`), the smooth random map's val deletion AUC and whether the chosen map beats it, the random
    map's and the centre prior's val pointing, and, per candidate, its val deletion AUC, its val pointing (None
    without masks), its Spearman correlation with the randomised model's map and its flag.
    """
    index, masks = _val_images(val, settings, seed)
    images, targets = val.images[index], val.labels[index]
    options = settings.map_options(seed)
    threshold = settings.sanity_threshold
    random_model, reset = randomised(model if unfolded is None else unfolded, seed)
    if unfolded is not None:
        random_model = fold_batchnorm(random_model)
    rows = []
    for method, layer in candidates(model, settings.methods, settings.layers):
        trained = cams.heatmaps(method, model, images, targets, layer, **options)
        shuffled = cams.heatmaps(method, random_model, images, targets, layer, **options)
        rho = rank_correlation(trained, shuffled)
        rows.append(
            {
                "method": method,
                "layer": layer,
                "val_deletion_auc": mean_deletion(model, images, targets, trained, settings.deletion_steps),
                "val_pointing_hit_tol": mean_pointing(trained, masks),
                "spearman_vs_random_model": rho,
                "flagged": rho is not None and rho > threshold,
            }
        )
    baselines = {
        name: localisation.baseline_maps(name, len(index), images.shape[-1], seed) for name in ("random", "centre")
    }
    random_deletion = mean_deletion(model, images, targets, baselines["random"], settings.deletion_steps)

    def rank(row: Mapping[str, Any]) -> tuple[float, float]:
        pointing = row["val_pointing_hit_tol"] if settings.choose_by == "pointing" else 0.0
        return -pointing, row["val_deletion_auc"]

    passing = [r for r in rows if not r["flagged"]] or rows
    best = min(passing, key=rank)
    layered = [r for r in passing if r["layer"] is not None] or [r for r in rows if r["layer"] is not None]
    cam_layer = best["layer"] or (min(layered, key=rank)["layer"] if layered else None)
    if cam_layer:
        cams.pin_layer(model, cam_layer)
    selection = {
        "method": best["method"],
        "layer": cam_layer,
        "n_val": len(index),
        "chosen_on": "val",
        "chosen_by": settings.choose_by,
        "val_deletion_auc": best["val_deletion_auc"],
        "val_pointing_hit_tol": best["val_pointing_hit_tol"],
        "random_map_val_deletion_auc": random_deletion,
        "baselines_val_pointing_hit_tol": {name: mean_pointing(heat, masks) for name, heat in baselines.items()},
        "candidates": rows,
        "sanity": {
            "threshold": threshold,
            "randomised_modules": reset,
            "seed": seed,
            "spearman": {_key(r): r["spearman_vs_random_model"] for r in rows},
            "flagged": [_key(r) for r in rows if r["flagged"]],
            "not_comparable": [_key(r) for r in rows if r["spearman_vs_random_model"] is None],
        },
    }
    selection["beats_random_on_val"] = beats_random_on_val(selection, best["method"])
    if logger is not None:
        _log(logger, selection)
    return selection


def _candidate(selection: Mapping[str, Any], method: str) -> Mapping[str, Any] | None:
    """A method's candidate row at the chosen CAM layer; None for a baseline (the random map, the centre prior)."""
    keys = {method, f"{method}@{selection['layer']}"}
    return next((r for r in selection["candidates"] if _key(r) in keys), None)


def sanity_of(selection: Mapping[str, Any], method: str) -> str:
    """A method's sanity-check outcome as the faithfulness tables show it: pass, flagged, not comparable (its
    randomised-model maps were constant), or baseline (the random map and the centre prior are not checked)."""
    row = _candidate(selection, method)
    if row is None:
        return "baseline"
    return "not comparable" if row["spearman_vs_random_model"] is None else "flagged" if row["flagged"] else "pass"


def beats_random_on_val(selection: Mapping[str, Any], method: str) -> bool | None:
    """Whether a method's val deletion AUC is below the smooth random map's on the same val images; None for a
    baseline."""
    row = _candidate(selection, method)
    if row is None:
        return None
    return bool(row["val_deletion_auc"] < selection["random_map_val_deletion_auc"])


def _key(row: Mapping[str, Any]) -> str:
    return row["method"] if row["layer"] is None else f"{row['method']}@{row['layer']}"


def _log(logger: Any, selection: Mapping[str, Any]) -> None:
    for row in selection["candidates"]:
        rho = row["spearman_vs_random_model"]
        shown = "not comparable (constant maps)" if rho is None else f"{rho:.2f}"
        pointing = row["val_pointing_hit_tol"]
        logger.info(
            "val deletion AUC %.3f, pointing with tolerance %s, Spearman vs randomised model %s: %s",
            row["val_deletion_auc"],
            "no masks" if pointing is None else f"{pointing:.3f}",
            shown,
            _key(row),
        )
    for key in selection["sanity"]["flagged"]:
        logger.warning(
            "sanity check: %s barely changes when the top layers are randomised (Spearman > %.2f); it does not "
            "explain this model",
            key,
            selection["sanity"]["threshold"],
        )
    if len(selection["sanity"]["flagged"]) == len(selection["candidates"]):
        logger.warning("every heatmap candidate failed the sanity check; the chosen one does not explain the model")
    if not selection["beats_random_on_val"]:
        logger.warning(
            "the chosen heatmap does not beat a smooth random map on val (deletion AUC %.3f against %.3f): read its "
            "maps with care",
            selection["val_deletion_auc"],
            selection["random_map_val_deletion_auc"],
        )
    logger.info(
        "heatmap chosen by %s on %d val images: %s (CAM layer %s)",
        selection["chosen_by"],
        selection["n_val"],
        selection["method"],
        selection["layer"],
    )
