"""How well one heatmap points at a finding: localisation metrics against its mask and box, and the baselines.

Every metric takes a heatmap (H, W) and a finding mask (bool H x W, non-empty):
- pointing game (Zhang et al. 2018): the heatmap's maximum lies inside the mask; with tolerance, within
  15/224 of the image side of it (their 15 px at 224 px input);
- energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the positive heat inside the finding's box;
- IoU of the heat thresholded at half its maximum with the mask;
- pixel AUC: the heat as a pixel-wise detector of the mask (ROC AUC over all pixels, no threshold).
A heatmap method means something only if it beats both baselines: a smooth random map and a centre prior (a centred
isotropic Gaussian: radiographs are framed on the anatomy, so the middle is a good blind guess).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.ndimage import distance_transform_edt, gaussian_filter
from sklearn.metrics import roc_auc_score

from medxfer.metrics import paired_mean_difference

IOU_THRESHOLD = 0.5
TOLERANCE = 15 / 224  # pointing-game tolerance as a fraction of the image side (Zhang et al. 2018)
CENTRE_SIGMA = 0.25  # the centre prior's standard deviation as a fraction of the image side
BASELINES = ("random", "centre")
LOCALISATION_COLUMNS = ["pointing_hit", "pointing_hit_tol", "energy_in_box", "iou", "pixel_auc"]
DELETION_COLUMNS = ["deletion_auc", "insertion_auc", "blurred_deletion_auc"]  # medxfer.faithfulness
SCORES = [*LOCALISATION_COLUMNS, *DELETION_COLUMNS, "seconds_per_image"]  # per image and method


def _peak(heat: np.ndarray) -> int:
    """Flat index of the heatmap's maximum. On a plateau (LIME's superpixels, a coarse CAM) the plateau's pixel nearest
    its centroid: the first in raster order would point from the region's top edge, a few pixels off its middle."""
    flat = heat.ravel()
    top = np.flatnonzero(flat == flat.max())
    if top.size == 1:
        return int(top[0])
    rows, cols = np.divmod(top, heat.shape[1])
    return int(top[np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)])


def pointing_hit(heat: np.ndarray, mask: np.ndarray) -> bool:
    """Pointing game: the heatmap's maximum lies inside the mask."""
    return bool(mask.ravel()[_peak(heat)])


def pointing_hit_tolerant(heat: np.ndarray, mask: np.ndarray, tolerance: float = TOLERANCE) -> bool:
    """Pointing game with tolerance: the maximum lies within `tolerance` times the image side of a mask pixel."""
    distance = distance_transform_edt(~mask.astype(bool))  # 0 inside, else Euclidean distance to the mask
    return bool(distance.ravel()[_peak(heat)] <= tolerance * max(mask.shape))


def bounding_box(mask: np.ndarray) -> np.ndarray:
    """The filled bounding box (bool, same shape) of a mask's pixels; all False for an empty mask."""
    box = np.zeros(mask.shape, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:
        box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    return box


def energy_in_box(heat: np.ndarray, box: np.ndarray) -> float:
    """Share of the positive heat inside the box (energy-based pointing game); NaN for a map with no positive heat."""
    positive = np.clip(heat.astype(np.float64), 0, None)
    total = positive.sum()
    return float(positive[box.astype(bool)].sum() / total) if total > 0 else float("nan")


def mask_iou(heat: np.ndarray, mask: np.ndarray, threshold: float = IOU_THRESHOLD) -> float:
    """IoU of the heatmap thresholded at `threshold` times its maximum with the mask."""
    peak = float(heat.max())
    region = heat >= threshold * peak if peak > 0 else np.zeros_like(mask, dtype=bool)
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum() / union) if union else float("nan")


def pixel_auc(heat: np.ndarray, mask: np.ndarray) -> float:
    """ROC AUC of the heat as a score for 'this pixel is in the mask'; NaN when the mask is empty or everything."""
    truth = mask.astype(bool).ravel()
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, heat.astype(np.float64).ravel()))


def localisation(heat: np.ndarray, mask: np.ndarray, box: np.ndarray | None = None) -> dict[str, float]:
    """Every localisation metric of one heatmap; `box` defaults to the mask's bounding box."""
    box = bounding_box(mask) if box is None or not box.any() else box.astype(bool)
    return {
        "pointing_hit": float(pointing_hit(heat, mask)),
        "pointing_hit_tol": float(pointing_hit_tolerant(heat, mask)),
        "energy_in_box": energy_in_box(heat, box),
        "iou": mask_iou(heat, mask),
        "pixel_auc": pixel_auc(heat, mask),
    }


def _unit_range(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(1, 2), keepdims=True)
    return (maps - low) / np.maximum(maps.max(axis=(1, 2), keepdims=True) - low, 1e-12)


def random_maps(n: int, size: int, seed: int) -> np.ndarray:
    """(n, size, size) smooth random maps in [0, 1]: blurred noise with blobs about as large as a CAM's cells."""
    rng = np.random.default_rng(seed)
    maps = np.stack([gaussian_filter(rng.random((size, size)), sigma=size / 16) for _ in range(n)])
    if n:
        maps = _unit_range(maps)
    return maps.astype(np.float32).reshape(n, size, size)


def centre_maps(n: int, size: int, sigma: float = CENTRE_SIGMA) -> np.ndarray:
    """(n, size, size) centre prior in [0, 1]: an isotropic Gaussian at the centre, sigma a fraction of the side."""
    axis = np.arange(size) - (size - 1) / 2
    squared = axis[:, None] ** 2 + axis[None, :] ** 2
    heat = np.exp(-squared / (2 * (sigma * size) ** 2))[None]
    return np.repeat(_unit_range(heat), n, axis=0).astype(np.float32)


def baseline_maps(name: str, n: int, size: int, seed: int) -> np.ndarray:
    """The maps of one baseline by name (see BASELINES)."""
    if name == "random":
        return random_maps(n, size, seed)
    if name == "centre":
        return centre_maps(n, size)
    raise ValueError(f"unknown baseline {name!r}; allowed: {list(BASELINES)}")


# metric -> sign of "better"
COMPARED = {"pointing_hit_tol": 1, "energy_in_box": 1, "deletion_auc": -1, "blurred_deletion_auc": -1}


def versus_baselines(images: pd.DataFrame, keys: list[str], n_resamples: int, seed: int) -> pd.DataFrame:
    """Per group of `keys` and method: mean of method minus each baseline on the same images, its paired bootstrap
    interval, and `beats_baselines_<metric>`: True when both intervals lie on the better side of zero (above for
    pointing and energy, below for the deletion AUCs). Baseline rows get NaN."""
    rows = []
    for group, part in images.groupby(keys, sort=False):
        compared = {m: sign for m, sign in COMPARED.items() if m in part}  # tables from before a metric existed
        wide = {m: part.pivot_table(index="image_id", columns="method", values=m, dropna=False) for m in compared}
        for method in part["method"].unique():
            row = dict(zip(keys, group if isinstance(group, tuple) else (group,), strict=True)) | {"method": method}
            for metric, sign in compared.items():
                beats = method not in BASELINES
                for baseline in BASELINES:
                    table = wide[metric]
                    if method in BASELINES or baseline not in table:
                        diff, low, high = float("nan"), None, None
                    else:
                        diff, low, high = paired_mean_difference(table[method], table[baseline], n_resamples, seed)
                    name = f"{metric}_minus_{baseline}"
                    row |= {name: diff, f"{name}_lo": low, f"{name}_hi": high}
                    beats = beats and low is not None and (low > 0 if sign > 0 else high < 0)
                row[f"beats_baselines_{metric}"] = beats if method not in BASELINES else None
            rows.append(row)
    return pd.DataFrame(rows)
