"""One registry of heatmap methods behind one function, like timm's model registry.

Every method takes (model, images (N, C, H, W) uint8 or float in [0, 1], target classes, layer name) and returns
(N, H, W) float32 maps in [0, 1]. CAM methods (pytorch-grad-cam) draw at a target layer; LIME and occlusion perturb
the input and ignore it. `heatmaps(name, ...)` is the one way to draw a map; `register` adds a method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import TypeVar

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, score_cam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from scipy.ndimage import gaussian_filter
from torch import nn

from medxfer import models
from medxfer.inference import predict_proba

Method = Callable[..., np.ndarray]
MapT = TypeVar("MapT", np.ndarray, torch.Tensor)
_REGISTRY: dict[str, Method] = {}
_LAYERED: set[str] = set()  # methods that draw at a target layer
PINNED_LAYER = "medxfer_cam_layer"  # model attribute: the layer chosen on val, used by every later CAM call
LIME_FILLS = {"black": 0, "mean": None}  # lime hide_color per explain.lime_fill


def register(name: str, uses_layer: bool) -> Callable[[Method], Method]:
    """Decorator: add a heatmap method under `name`."""

    def add(fn: Method) -> Method:
        _REGISTRY[name] = fn
        if uses_layer:
            _LAYERED.add(name)
        return fn

    return add


def list_methods() -> list[str]:
    return list(_REGISTRY)


def uses_layer(name: str) -> bool:
    return name in _LAYERED


def heatmaps(
    name: str, model: nn.Module, images: np.ndarray, targets: Sequence[int], layer: str | None = None, **options
) -> np.ndarray:
    """(N, H, W) maps in [0, 1] of method `name`.

    options: seed, lime_samples, lime_segments, lime_fill (ExplainSection.map_options), or a method's own keywords
    (rise_masks, rise_cells, rise_keep; occlusion's patch); each method ignores the others.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown explanation method {name!r}; allowed: {list_methods()}")
    if len(images) == 0:
        return np.zeros((0, *images.shape[2:]), dtype=np.float32)
    return _REGISTRY[name](model, images, targets, layer, **options)


def device_of(model: nn.Module) -> torch.device:
    """Where the model's weights live: every forward pass here runs there (pytorch-grad-cam does the same)."""
    return next(model.parameters(), torch.empty(0)).device


def candidate_layers(model: nn.Module, positions: Sequence[int]) -> list[str]:
    """Names of timm feature_info stages at the given positions (-1 = last stage), deduplicated, in order."""
    stages = model.feature_info
    names = [stages[p]["module"] for p in positions if -len(stages) <= p < len(stages)]
    return list(dict.fromkeys(names))


def pin_layer(model: nn.Module, layer: str) -> None:
    """Make `layer` the CAM target of every later call that names none (gallery and faithfulness alike)."""
    model.get_submodule(layer)  # fails now, with the name, if the model has no such module
    setattr(model, PINNED_LAYER, layer)


def target_layer(model: nn.Module, layer: str | None, size: int) -> nn.Module:
    """The named layer, else the pinned one, else models.gradcam_layer (deepest stage >= 4 cells wide)."""
    layer = layer or getattr(model, PINNED_LAYER, None)
    return model.get_submodule(layer) if layer else models.gradcam_layer(model, size)


def _unit(images: np.ndarray) -> torch.Tensor:
    """Float (N, C, H, W) in [0, 1] from uint8 or float [0, 1] images."""
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    return tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()


def _uint8(images: np.ndarray) -> np.ndarray:
    return images if images.dtype == np.uint8 else np.clip(np.round(images * 255), 0, 255).astype(np.uint8)


def _by_max(heat: MapT) -> MapT:
    """A non-negative map (array or tensor) scaled so its maximum is 1; an all-zero map stays zero."""
    return heat / heat.max() if heat.max() > 0 else heat


def _cam(cam_class: type) -> Method:
    def draw(model: nn.Module, images: np.ndarray, targets: Sequence[int], layer: str | None, **_) -> np.ndarray:
        inputs = models.standardize(_unit(images))
        target = target_layer(model, layer, images.shape[-1])
        with cam_class(model=model, target_layers=[target]) as cam:
            maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(int(t)) for t in targets])
        return np.nan_to_num(maps).astype(np.float32)

    draw.__doc__ = f"{cam_class.__name__} maps at the target layer."
    return draw


for _name, _class in [
    ("gradcam", GradCAM),
    ("gradcampp", GradCAMPlusPlus),
    ("hirescam", HiResCAM),
    ("layercam", LayerCAM),
    ("eigencam", EigenCAM),  # class-agnostic: the first principal component of the activations
]:
    register(_name, uses_layer=True)(_cam(_class))


class _ScoreCAM(ScoreCAM):
    batch_size = 64  # masked copies per forward pass (the library's default is 16)


@register("scorecam", uses_layer=True)
def _scorecam(model: nn.Module, images: np.ndarray, targets: Sequence[int], layer: str | None, **_) -> np.ndarray:
    """Score-CAM (Wang et al. 2020): each activation map of the layer, as a soft mask on the image, weighted by the
    softmax of the class scores the masked images keep. No gradients, one forward pass per channel and image: the
    images go a few at a time, because the library holds every masked copy of a batch at once."""
    score_cam.tqdm = SimpleNamespace(tqdm=_without_progress_bar)  # a bar per image into the job's log otherwise
    draw, step = _cam(_ScoreCAM), 4
    return np.concatenate(
        [draw(model, images[i : i + step], targets[i : i + step], layer) for i in range(0, len(images), step)]
    )


@register("occlusion", uses_layer=False)
def occlusion_maps(
    model: nn.Module,
    images: np.ndarray,
    targets: Sequence[int],
    layer: str | None = None,
    patch: int | None = None,
    batch_size: int = 256,
    **_,
) -> np.ndarray:
    """Occlusion (Zeiler and Fergus 2014): the drop of the target probability when a black patch covers a pixel.

    Patch = 1/8 of the side, stride = patch/2, so about 15 x 15 forward passes per image at any size; each pixel's
    heat is the mean drop over the patches covering it, scaled to [0, 1].
    """
    del layer
    n, _channels, height, width = images.shape
    patch = patch or max(2, height // 8)
    stride = max(1, patch // 2)
    rows, cols = _starts(height, patch, stride), _starts(width, patch, stride)
    device = device_of(model)
    unit = _unit(images)
    maps = np.zeros((n, height, width), dtype=np.float32)
    coverage = torch.zeros(height, width)
    for r in rows:
        for c in cols:
            coverage[r : r + patch, c : c + patch] += 1
    with torch.no_grad():
        for i in range(n):
            target = int(targets[i])
            base = torch.softmax(model(models.standardize(unit[i : i + 1]).to(device)), dim=1)[0, target].cpu()
            heat = torch.zeros(height, width)
            boxes = [(r, c) for r in rows for c in cols]
            for start in range(0, len(boxes), batch_size):
                chunk = boxes[start : start + batch_size]
                batch = unit[i].repeat(len(chunk), 1, 1, 1)
                for k, (r, c) in enumerate(chunk):
                    batch[k, :, r : r + patch, c : c + patch] = 0.0
                proba = torch.softmax(model(models.standardize(batch).to(device)), dim=1)[:, target].cpu()
                for (r, c), drop in zip(chunk, (base - proba).clamp(min=0), strict=True):
                    heat[r : r + patch, c : c + patch] += drop
            heat = heat / coverage
            maps[i] = _by_max(heat).numpy()
    return maps


@register("rise", uses_layer=False)
def rise_maps(
    model: nn.Module,
    images: np.ndarray,
    targets: Sequence[int],
    layer: str | None = None,
    rise_masks: int = 500,
    rise_cells: int = 8,
    rise_keep: float = 0.5,
    seed: int = 0,
    batch_size: int = 128,
    **_,
) -> np.ndarray:
    """RISE (Petsiuk et al. 2018): the target probability over many randomly masked copies, credited to the pixels
    each copy kept. Masks: a `rise_cells` x `rise_cells` grid, each cell kept with probability `rise_keep`, upsampled
    bilinearly and shifted by a random fraction of a cell, so they are smooth and do not share one cell grid.

    The heat is the probability's covariance with a pixel being kept (its mean over the copies that keep the pixel,
    minus its mean over all): the paper's weighted sum of masks carries that mean everywhere, which would put heat
    on every pixel, not only on the evidence. Negative covariance is evidence against the class and becomes 0.
    Every image sees the same masks; they are drawn as small grids and upsampled a batch at a time, so memory does
    not grow with `rise_masks` and the maps do not depend on `batch_size`.
    """
    del layer
    n, _channels, height, width = images.shape
    device = device_of(model)
    unit = _unit(images)
    maps = np.zeros((n, height, width), dtype=np.float32)
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand(rise_masks, 1, rise_cells, rise_cells, generator=generator) < rise_keep).float()
    cell_h, cell_w = -(-height // rise_cells), -(-width // rise_cells)
    shifts = torch.stack(
        [
            torch.randint(0, cell_h, (rise_masks,), generator=generator),
            torch.randint(0, cell_w, (rise_masks,), generator=generator),
        ],
        dim=1,
    )
    with torch.no_grad():
        for i in range(n):
            weighted, kept, total = torch.zeros(height, width), torch.zeros(height, width), 0.0
            for start in range(0, rise_masks, batch_size):
                part = slice(start, start + batch_size)
                masks = _rise_masks(grids[part], shifts[part], (cell_h, cell_w), (height, width))
                logits = model(models.standardize(unit[i] * masks).to(device))
                proba = torch.softmax(logits, dim=1)[:, int(targets[i])].cpu()
                weighted += torch.einsum("k,khw->hw", proba, masks[:, 0])
                kept += masks[:, 0].sum(dim=0)
                total += float(proba.sum())
            heat = (weighted - total / rise_masks * kept).clamp(min=0)
            maps[i] = _by_max(heat).numpy()
    return maps


def _rise_masks(
    grids: torch.Tensor, shifts: torch.Tensor, cell: tuple[int, int], image: tuple[int, int]
) -> torch.Tensor:
    """(K, 1, H, W) float masks in [0, 1] from (K, 1, s, s) binary grids: each upsampled bilinearly to s + 1 cells of
    `cell` pixels, one cell more than the image, then the H x W window at its (row, column) shift."""
    cells, (height, width) = grids.shape[-1], image
    size = ((cells + 1) * cell[0], (cells + 1) * cell[1])
    up = nn.functional.interpolate(grids, size=size, mode="bilinear")
    return torch.stack([up[k, :, y : y + height, x : x + width] for k, (y, x) in enumerate(shifts.tolist())])


def _starts(side: int, patch: int, stride: int) -> list[int]:
    """Patch offsets along one side with the last patch flush with the edge, so every pixel is covered."""
    starts = list(range(0, max(side - patch, 0) + 1, stride))
    if starts[-1] + patch < side:
        starts.append(side - patch)
    return starts


def segments(image: np.ndarray, n_segments: int, seed: int) -> np.ndarray:
    """Superpixels for LIME on a (C, H, W) uint8 grey radiograph or multi-window CT slice.

    SLIC on the image's own channels (not a false RGB) with a low compactness for intensities in [0, 1], so the
    segments follow the edges of bones, lungs and lesions rather than a colour space grey images do not have.
    """
    from skimage.segmentation import slic

    hwc = np.moveaxis(image, 0, -1).astype(np.float64) / 255.0
    smooth = gaussian_filter(hwc, sigma=(1, 1, 0))
    channel_axis = -1 if hwc.shape[-1] > 1 else None
    pixels = smooth if channel_axis is not None else smooth[..., 0]
    labels = slic(pixels, n_segments=n_segments, compactness=0.1, start_label=0, channel_axis=channel_axis)
    del seed  # SLIC is deterministic; kept in the signature for segmenters that are not
    return labels


@register("lime", uses_layer=False)
def _lime(
    model: nn.Module,
    images: np.ndarray,
    targets: Sequence[int],
    layer: str | None = None,
    lime_samples: int = 150,
    lime_segments: int | Sequence[int] = 50,
    lime_fill: str = "black",
    seed: int = 0,
    **_,
) -> np.ndarray:
    """LIME at one SLIC granularity, or at several with their maps averaged (each scaled to [0, 1] first): a small
    finding's heat then does not hang on where one segmentation draws its borders."""
    del layer
    scales, images = [lime_segments] if isinstance(lime_segments, int) else list(lime_segments), _uint8(images)
    maps = [lime_maps(model, images, targets, lime_samples, seed, n, lime_fill) for n in scales]
    return maps[0] if len(maps) == 1 else np.stack([_by_max(heat) for heat in np.mean(maps, axis=0)])


def lime_maps(
    model: nn.Module,
    images: np.ndarray,
    targets: Sequence[int],
    num_samples: int,
    seed: int,
    n_segments: int = 50,
    fill: str = "black",
) -> np.ndarray:
    """(N, H, W) LIME maps: each superpixel's positive weight for the target class, scaled to [0, 1].

    `fill`: what a hidden superpixel becomes, black or its own mean grey. Black blobs are unlike any radiograph and
    can lower a class's probability wherever they land; the mean removes only the texture inside the superpixel.
    """
    from lime import lime_image

    # lime 0.2.0.1 draws a tqdm bar per image into the job's log and has no switch (its later progress_bar=False)
    lime_image.tqdm = _without_progress_bar
    n, channels = images.shape[:2]
    if channels > 3:
        raise ValueError(f"LIME needs at most 3 channels, got {channels}")
    if fill not in LIME_FILLS:
        raise ValueError(f"unknown LIME fill {fill!r}; allowed: {list(LIME_FILLS)}")

    def classify(batch: np.ndarray) -> np.ndarray:
        chw = np.moveaxis(batch[..., :channels], -1, 1)
        return predict_proba(model, np.clip(np.round(chw * 255), 0, 255).astype(np.uint8), device_of(model), 128)

    maps = np.zeros((n, *images.shape[2:]), dtype=np.float32)
    for i in range(n):
        hwc = np.moveaxis(images[i], 0, -1).astype(np.float64) / 255.0
        rgb = np.concatenate([hwc] + [hwc[..., :1]] * (3 - channels), axis=-1)
        labels = segments(images[i], n_segments, seed)
        explainer = lime_image.LimeImageExplainer(random_state=seed)
        explanation = explainer.explain_instance(
            rgb,
            classify,
            labels=(int(targets[i]),),
            top_labels=None,
            hide_color=LIME_FILLS[fill],  # None: lime fills each superpixel with its mean
            num_samples=num_samples,
            batch_size=64,  # lime's default of 10 makes many small forward passes
            segmentation_fn=lambda _image, labels=labels: labels,
        )
        segment_weight = np.zeros(explanation.segments.max() + 1, dtype=np.float32)
        for segment, weight in explanation.local_exp[int(targets[i])]:
            segment_weight[segment] = max(weight, 0.0)
        heat = segment_weight[explanation.segments]
        maps[i] = _by_max(heat)
    return maps


def _without_progress_bar(iterable, **_):
    return iterable
