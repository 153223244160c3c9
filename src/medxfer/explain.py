"""Grad-CAM and LIME heatmaps for a fine-tuned network on test images, saved as overlays at image size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from medxfer import models, runtime  # noqa: E402
from medxfer.cache import Split, load_cached  # noqa: E402
from medxfer.io import atomic_path, save_npz  # noqa: E402
from medxfer.log import get_logger
from medxfer.train import predict_proba  # noqa: E402

METHODS = ("gradcam", "lime")


def choose_images(split: Split, n_images: int, seed: int) -> np.ndarray:
    """Indices of up to n test images, spread evenly over the classes, seeded."""
    rng = np.random.default_rng(seed)
    classes = np.unique(split.labels)
    per_class = [rng.permutation(np.flatnonzero(split.labels == c)).tolist() for c in classes]
    chosen: list[int] = []
    while len(chosen) < min(n_images, len(split.labels)):
        for pool in per_class:
            if pool and len(chosen) < n_images:
                chosen.append(pool.pop(0))
    return np.array(sorted(chosen), dtype=np.int64)


def gradcam_maps(model: torch.nn.Module, images: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """(N, H, W) Grad-CAM maps in [0, 1] for the given classes, at the last feature stage."""
    inputs = models.normalize(torch.from_numpy(images))
    layer = models.gradcam_layer(model, images.shape[-1])
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return maps.astype(np.float32)


def lime_maps(
    model: torch.nn.Module, images: np.ndarray, targets: Sequence[int], num_samples: int, seed: int
) -> np.ndarray:
    """(N, H, W) LIME maps: each superpixel's positive weight for the target class, scaled to [0, 1]."""
    from lime import lime_image
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    n, channels = images.shape[:2]
    if channels > 3:
        raise ValueError(f"LIME needs at most 3 channels, got {channels}")
    segmenter = SegmentationAlgorithm(
        "slic", n_segments=40, compactness=0.1, sigma=1, start_label=0, channel_axis=-1, random_seed=seed
    )

    def classify(batch: np.ndarray) -> np.ndarray:
        chw = np.moveaxis(batch[..., :channels], -1, 1)
        return predict_proba(model, np.clip(chw * 255, 0, 255).astype(np.uint8), torch.device("cpu"), 128)

    maps = np.zeros((n, *images.shape[2:]), dtype=np.float32)
    for i in range(n):
        hwc = np.moveaxis(images[i], 0, -1).astype(np.float64) / 255.0
        rgb = np.concatenate([hwc] + [hwc[..., :1]] * (3 - channels), axis=-1)
        explainer = lime_image.LimeImageExplainer(random_state=seed)
        explanation = explainer.explain_instance(
            rgb,
            classify,
            labels=(int(targets[i]),),
            top_labels=None,
            hide_color=0,
            num_samples=num_samples,
            segmentation_fn=segmenter,
        )
        segment_weight = np.zeros(explanation.segments.max() + 1, dtype=np.float32)
        for segment, weight in explanation.local_exp[int(targets[i])]:
            segment_weight[segment] = max(weight, 0.0)
        heat = segment_weight[explanation.segments]
        maps[i] = heat / heat.max() if heat.max() > 0 else heat
    return maps


def overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """RGB uint8 overlay of a heatmap on the first channel of a (C, H, W) uint8 image, same size as the image."""
    gray = image[0].astype(np.float32) / 255.0
    return show_cam_on_image(np.repeat(gray[..., None], 3, axis=-1), heatmap, use_rgb=True, image_weight=0.6)


def _save_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def explain_model(
    model_dir: Path,
    manifest: Path,
    images: Path,
    out_dir: Path,
    methods: Sequence[str] = METHODS,
    n_images: int = 6,
    lime_samples: int = 300,
    seed: int = 0,
    threads: int = 1,
    log_path: Path | None = None,
) -> pd.DataFrame:
    """Write `<method>/<image_id>.png` overlays, heatmaps.npz, index.csv and a gallery.png per model."""
    logger = get_logger("medxfer.explain", log_path)
    runtime.configure(threads, seed)
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown explanation method(s) {sorted(unknown)}; allowed: {list(METHODS)}")
    model, meta = models.load(model_dir, "cpu")  # Grad-CAM hooks and LIME's many small batches run fine on CPU
    test = load_cached(manifest, images).splits["test"]
    index = choose_images(test, n_images, seed)
    chosen = test.images[index]
    proba = predict_proba(model, chosen, torch.device("cpu"))
    predicted = proba.argmax(axis=1)
    table = pd.DataFrame(
        {
            "image_id": test.ids[index],
            "label": test.labels[index],
            "prediction": predicted,
            "probability": proba[np.arange(len(index)), predicted],
            "mask": test.masks[index],
        }
    )
    heatmaps = {}
    for method in methods:
        maps = (
            gradcam_maps(model, chosen, predicted)
            if method == "gradcam"
            else lime_maps(model, chosen, predicted, lime_samples, seed)
        )
        heatmaps[method] = maps
        paths = []
        for image_id, image, heat in zip(table["image_id"], chosen, maps, strict=True):
            path = out_dir / method / f"{image_id}.png"
            _save_png(path, overlay(image, heat))
            paths.append(str(path.relative_to(out_dir)))
        table[f"{method}_png"] = paths
        logger.info("%s: %d %s overlays for %s", meta["arch"], len(paths), method, model_dir)
    save_npz(out_dir / "heatmaps.npz", ids=table["image_id"].to_numpy(str), images=chosen, **heatmaps)
    _gallery(out_dir / "gallery.png", chosen, table, heatmaps, meta["classes"], f"{meta['arch']} ({meta['init']})")
    with atomic_path(out_dir / "index.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def _gallery(
    path: Path, images: np.ndarray, table: pd.DataFrame, heatmaps: dict[str, np.ndarray], classes: list[str], title: str
) -> None:
    cols = 1 + len(heatmaps)
    fig, axes = plt.subplots(len(table), cols, figsize=(2.2 * cols, 2.3 * len(table)), squeeze=False)
    for row, record in enumerate(table.itertuples()):
        axes[row, 0].imshow(images[row, 0], cmap="gray")
        axes[row, 0].set_title(
            f"label {classes[record.label]}\npred {classes[record.prediction]} p={record.probability:.2f}", fontsize=7
        )
        for col, (method, maps) in enumerate(heatmaps.items(), start=1):
            axes[row, col].imshow(overlay(images[row], maps[row]))
            axes[row, col].set_title(method, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
