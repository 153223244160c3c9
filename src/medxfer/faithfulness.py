"""How faithful a heatmap method is, per test image: localisation where a finding's mask is known, and deletion and
insertion AUC everywhere, next to the two baselines every method must beat (localisation.BASELINES).

Deletion and insertion AUC (Petsiuk et al. 2018, RISE): the target-class probability as the most salient pixels are
removed (set to black) or inserted into a blurred copy, averaged over the fraction of pixels. Lower deletion and
higher insertion mean a heatmap that points at what the model uses. Blurred deletion removes them by putting in the
blurred copy instead of black: black blobs are unlike any radiograph, and on some models lower the class probability
wherever they land, so a random map deletes as fast as a good one; the blur takes away the fine detail a finding is
made of and keeps the brightness. Heatmaps here explain the true class of each
image, so a positive image's map is compared with the finding it shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import gaussian_filter

from medxfer.cache import Split
from medxfer.cams import device_of
from medxfer.imaging import read_mask
from medxfer.inference import predict_proba
from medxfer.localisation import (
    BASELINES,
    DELETION_COLUMNS,
    LOCALISATION_COLUMNS,
    SCORES,
    baseline_maps,
    localisation,
)

MapsOf = Callable[[str, np.ndarray, np.ndarray], np.ndarray]  # (method, images, targets) -> (N, H, W) maps
FAITHFULNESS_COLUMNS = ["image_id", "label", "method", "has_mask", *SCORES]
CURVES = tuple(column.removesuffix("_auc") for column in DELETION_COLUMNS)  # deletion, insertion, blurred_deletion


def deletion_insertion(
    model: torch.nn.Module,
    image: np.ndarray,
    heat: np.ndarray,
    target: int,
    steps: int = 16,
    curves: Sequence[str] = CURVES,
) -> tuple[float, ...]:
    """The AUCs of the target-class probability over the fraction of pixels changed, one per curve asked for, in
    that order (default: deletion, insertion, blurred deletion).

    Pixels go in order of decreasing heat; deletion sets them to black, insertion copies them into a blurred
    copy of the image (sigma = 1/8 of the side), blurred deletion replaces them with that copy. Each curve has
    steps + 1 points from 0 to all pixels; only the curves asked for are run through the model.
    """
    unknown = set(curves) - set(CURVES)
    if unknown:
        raise ValueError(f"unknown perturbation curve(s) {sorted(unknown)}; allowed: {list(CURVES)}")
    channels, height, width = image.shape
    order = np.argsort(-heat.ravel(), kind="stable")
    blurred = np.stack([gaussian_filter(ch.astype(np.float64), sigma=width / 8) for ch in image])
    blurred = np.clip(np.round(blurred), 0, 255).astype(np.uint8)
    counts = np.round(np.linspace(0, height * width, steps + 1)).astype(np.int64)
    # per curve: the image it starts from and what a changed pixel takes its value from
    sources = {
        "deletion": (image, np.zeros_like(image)),
        "insertion": (blurred, image),
        "blurred_deletion": (image, blurred),
    }
    stacks = []
    for name in curves:
        start, fill = (a.reshape(channels, -1) for a in sources[name])
        stack = np.repeat(start[None], steps + 1, axis=0)
        for k, count in enumerate(counts):
            top = order[:count]
            stack[k][:, top] = fill[:, top]
        stacks.append(stack)
    batch = np.concatenate(stacks).reshape(len(curves) * (steps + 1), channels, height, width)
    probabilities = predict_proba(model, batch, device_of(model))[:, target].reshape(len(curves), steps + 1)
    fractions = counts / counts[-1]
    return tuple(float(np.trapezoid(curve, fractions)) for curve in probabilities)


def choose_masked(has_mask: np.ndarray, n_images: int, seed: int) -> np.ndarray:
    """Sorted indices of up to n images, seeded; only images with a finding mask when any has one."""
    pool = np.flatnonzero(has_mask) if has_mask.any() else np.arange(len(has_mask))
    return np.sort(np.random.default_rng(seed).permutation(pool)[:n_images])


def faithfulness(
    model: torch.nn.Module,
    split: Split,
    methods: Sequence[str],
    maps_of: MapsOf,
    n_images: int,
    steps: int,
    seed: int,
) -> pd.DataFrame:
    """Per image and method (plus each baseline): localisation metrics where a mask exists (NaN elsewhere),
    deletion and insertion AUC always, and the seconds per image the method took to draw its maps. Images with a
    non-empty mask are preferred, so a data set with masks measures localisation."""
    size = split.images.shape[-1]
    masks = [read_mask(m, size) for m in split.masks]
    has_mask = np.array([m is not None and bool(m.any()) for m in masks], dtype=bool)
    index = choose_masked(has_mask, n_images, seed)
    boxes = split.boxes if split.boxes is not None else np.full(len(masks), "")
    images, targets = split.images[index], split.labels[index]
    maps, seconds = {}, {}
    for method in [*methods, *BASELINES]:
        start = time.perf_counter()
        if method in BASELINES:
            maps[method] = baseline_maps(method, len(index), size, seed)
        else:
            maps[method] = maps_of(method, images, targets)
        seconds[method] = (time.perf_counter() - start) / max(1, len(index))
    nan = dict.fromkeys(LOCALISATION_COLUMNS, float("nan"))
    rows = []
    for method, heat in maps.items():
        for k, i in enumerate(index):
            curves = deletion_insertion(model, images[k], heat[k], int(targets[k]), steps)
            scores = localisation(heat[k], masks[i], read_mask(boxes[i], size)) if has_mask[i] else nan
            rows.append(
                {"image_id": split.ids[i], "label": int(targets[k]), "method": method, "has_mask": bool(has_mask[i])}
                | scores
                | dict(zip(DELETION_COLUMNS, curves, strict=True))
                | {"seconds_per_image": seconds[method]}
            )
    return pd.DataFrame(rows, columns=FAITHFULNESS_COLUMNS)
