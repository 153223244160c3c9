"""One factory for every network: timm architectures, three inits, and safetensors checkpoints without pickle."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

from medxfer.fold import fold_batchnorm
from medxfer.io import atomic_path, write_json

INITS = ("scratch", "imagenet", "indomain")
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
# uint8 images scaled to [0, 1] are normalised with these per channel; recorded in every checkpoint.
NORM_MEAN, NORM_STD = 0.5, 0.25


HEADS = ("linear", "ordinal")
DESIGNED_STRIDE = 32


def create(
    arch: str,
    num_classes: int,
    in_chans: int,
    truncate_stages: int | None = None,
    head: str = "linear",
    output_stride: int = DESIGNED_STRIDE,
) -> nn.Module:
    """A timm model by name with random weights; nothing is downloaded. `truncate_stages`: see `truncate`;
    `head`: timm's linear classifier, or `ordinal` (CumulativeLinkHead) in its place. `output_stride` below 32:
    timm dilates the last stages instead of striding them, with the same weights, so the last feature map (Grad-CAM's,
    mask guidance's) is 2x or 4x finer per side.

    Weights are channels-last (NHWC), as `normalize` makes the inputs: on CUDA and on the CPU alike it is the fast
    layout for these convolutions (benchmarks/memory_format.py: EfficientNet-Lite training steps 1.7-2.8x faster on
    a 2-core CPU at 28-64 px).
    """
    if arch not in timm.list_models():
        raise ValueError(f"unknown architecture '{arch}': not a timm model name (see timm.list_models())")
    dilation = {} if output_stride == DESIGNED_STRIDE else {"output_stride": output_stride}
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **dilation)
    except TypeError as err:
        if not dilation:
            raise
        raise ValueError(f"output_stride {output_stride}: timm cannot dilate {arch} ({err})") from err
    model.output_stride = output_stride
    model = model if truncate_stages is None else truncate(model, truncate_stages, num_classes)
    if head not in HEADS:
        raise ValueError(f"unknown head '{head}'; allowed: {list(HEADS)}")
    if head == "ordinal":
        model.set_submodule(head_prefix(model), CumulativeLinkHead(model.get_classifier().in_features, num_classes))
    init_head(model)
    return model.to(memory_format=torch.channels_last)


HEAD_STD = 0.01


class CumulativeLinkHead(nn.Linear):
    """Ordinal head (proportional-odds cumulative link, McCullagh 1980): one score s = w.x + b and K-1 increasing
    cut-points c_k, P(grade <= k) = sigmoid(c_k - s). Higher scores mean higher grades, so the class probabilities
    respect the order (a model cannot favour grades 0 and 3 over 1 and 2).

    The output is the log class probabilities: softmax of it gives them back and cross-entropy on it is the
    model's negative log-likelihood, so the training loop, calibration, Grad-CAM and every reader of logits work
    on it unchanged.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"an ordinal head needs at least two grades, got {num_classes}")
        super().__init__(in_features, 1)
        self.num_classes = num_classes
        # cut-points of equal grade shares at score 0: c_k = logit(k / K); stored as the first and positive gaps
        cuts = torch.logit(torch.arange(1, num_classes) / num_classes)
        self.first_cut = nn.Parameter(cuts[:1].clone())
        self.cut_gaps = nn.Parameter(torch.log(torch.expm1(cuts[1:] - cuts[:-1])))  # softplus^-1 of the gaps

    def cut_points(self) -> torch.Tensor:
        return torch.cat([self.first_cut, self.first_cut + torch.cumsum(nn.functional.softplus(self.cut_gaps), 0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = super().forward(x).float()
        below = torch.sigmoid(self.cut_points().float() - score)  # (B, K-1): P(grade <= k)
        edges = torch.cat([torch.zeros_like(score), below, torch.ones_like(score)], dim=1)
        return torch.log((edges[:, 1:] - edges[:, :-1]).clamp_min(1e-12))


def init_head(model: nn.Module) -> None:
    """Start the classification head near zero (normal, std HEAD_STD; bias 0), as fine-tuning recipes do.

    timm's EfficientNet head follows Google's init, uniform in +-1/sqrt(num_classes): for two classes that is +-0.7
    per weight, logits with a standard deviation above 10 at the start, and a loss that first has to undo them.
    """
    head = model.get_classifier()
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=HEAD_STD)
        nn.init.zeros_(head.bias)


def truncate(model: nn.Module, stages: int, num_classes: int) -> nn.Module:
    """Truncated transfer learning: keep the first `stages` feature levels of timm's feature_info (stem = 1), then
    global average pooling and a new linear head.

    Early stages carry generic edges and textures that transfer across domains; the late, source-specific stages
    (most of the parameters) go. timm's own pruning keeps the kept modules' names, so pretrained weights, Grad-CAM
    (feature_info is cut to the kept levels) and feature extraction work on the truncated model as on the full one.
    """
    levels = len(model.feature_info)
    if not 1 <= stages < levels:
        name = model.pretrained_cfg.get("architecture")
        raise ValueError(f"truncate_stages must be 1..{levels - 1} for {name} ({levels} feature levels), got {stages}")
    model.prune_intermediate_layers(indices=[stages - 1], prune_norm=True, prune_head=True)
    model.reset_classifier(num_classes, "avg")
    model.feature_info = model.feature_info[:stages]
    model.truncate_stages = stages
    return model


def num_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def head_prefix(model: nn.Module) -> str:
    return model.pretrained_cfg["classifier"]


def load_backbone(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Copy pretrained weights into `model`, dropping the old head and adapting the stem to the input channels.

    Returns the keys that were newly initialised (the head). A shape mismatch anywhere else is an error, so a
    wrong checkpoint for this architecture is caught here rather than silently ignored.
    """
    state = dict(state_dict)
    head = head_prefix(model) + "."
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    if getattr(model, "truncate_stages", None) is not None:
        state = {k: v for k, v in state.items() if k in own}  # the stages truncation removed
    stem_key = model.pretrained_cfg["first_conv"] + ".weight"
    if stem_key in state and state[stem_key].shape[1] != own[stem_key].shape[1]:
        state[stem_key] = adapt_stem(state[stem_key], own[stem_key].shape[1])
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"{source}: weights do not fit {model.default_cfg.get('architecture')}: {mismatched[:5]}")
    result = model.load_state_dict(state, strict=False)
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if not k.startswith(head)]
    if unexpected or missing:
        raise ValueError(
            f"{source}: checkpoint does not match the architecture (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return list(result.missing_keys)


def adapt_stem(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Fit a first-conv weight to `in_chans` inputs, keeping the response to a grey image the same.

    RGB sources use timm's own rule (sum for grey input, repeat for more); other sources are averaged to one
    channel first and then spread evenly, e.g. a grey X-ray stem over three CT windows.
    """
    if weight.shape[1] == 3:
        return adapt_input_conv(in_chans, weight)
    grey = weight.sum(dim=1, keepdim=True)
    return grey.repeat(1, in_chans, 1, 1) / in_chans


def create_initialised(
    arch: str,
    num_classes: int,
    in_chans: int,
    init: str,
    init_path: str | Path | None = None,
    truncate_stages: int | None = None,
    head: str = "linear",
    output_stride: int = DESIGNED_STRIDE,
) -> nn.Module:
    """Build a model for fine-tuning: `scratch`, `imagenet` (local safetensors file) or `indomain` (checkpoint dir)."""
    model = create(arch, num_classes, in_chans, truncate_stages, head, output_stride)
    return initialise(model, arch, init, init_path)


def initialise(model: nn.Module, arch: str, init: str, init_path: str | Path | None = None) -> nn.Module:
    """Load the backbone of `init` into a freshly built `arch` (see create_initialised); the head stays new."""
    if init == "scratch":
        return model
    if init not in INITS:
        raise ValueError(f"unknown init '{init}'; allowed: {list(INITS)}")
    if init_path is None:
        raise ValueError(f"init '{init}' needs a weights path")
    path = Path(init_path)
    if init == "indomain":
        meta = read_meta(path)
        if meta["arch"] != arch:
            raise ValueError(f"{path}: checkpoint is a {meta['arch']}, not a {arch}")
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{init} weights for {arch} not found: {path} (nothing is downloaded; give a local file)"
        )
    load_backbone(model, safetensors.torch.load_file(str(path)), str(path))
    return model


def save(out_dir: str | Path, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """Write model.safetensors + model.json atomically; the JSON says everything needed to rebuild and use it."""
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        safetensors.torch.save_file(state, str(tmp))
    full_meta = {
        "normalization": {"mean": NORM_MEAN, "std": NORM_STD, "scale": 1 / 255},
        "versions": {pkg: version(pkg) for pkg in ("torch", "timm", "medxfer")},
        "num_parameters": num_parameters(model),
        "truncate_stages": getattr(model, "truncate_stages", None),
        "output_stride": getattr(model, "output_stride", DESIGNED_STRIDE),
        "head": "ordinal" if isinstance(model.get_classifier(), CumulativeLinkHead) else "linear",
        **meta,
    }
    for key in ("arch", "classes", "in_chans", "input_size"):
        if key not in full_meta:
            raise ValueError(f"checkpoint metadata needs '{key}'")
    write_json(out_dir / META_FILE, full_meta)


def read_meta(ckpt_dir: str | Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint metadata not found")
    return json.loads(path.read_text())


def load(
    ckpt_dir: str | Path, device: str | torch.device = "cpu", fold: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its directory, in eval mode; reads tensors only (safetensors), never executes code from
    the file. `fold`: BatchNorms folded into their convolutions (medxfer.fold), the same function at less cost, for
    readers that only infer (features, robustness, bundle predictions); by default the network as saved."""
    meta = read_meta(ckpt_dir)
    head = meta.get("head", "linear")
    stride = meta.get("output_stride", DESIGNED_STRIDE)
    model = create(meta["arch"], len(meta["classes"]), meta["in_chans"], meta.get("truncate_stages"), head, stride)
    state = safetensors.torch.load_file(str(Path(ckpt_dir) / WEIGHTS_FILE), device=str(device))
    model.load_state_dict(state, strict=True)
    model = model.to(device).eval()
    return (fold_batchnorm(model) if fold else model), meta


def gradcam_layer(model: nn.Module, input_size: int = 224, min_cells: int = 4) -> nn.Module:
    """The Grad-CAM target: the deepest feature stage (timm's feature_info) whose map is still >= min_cells wide.

    The last stage is the usual choice, but on small inputs (64 px: a 2x2 map in a ResNet) it cannot localise
    anything, so the stage before it is taken.
    """
    stages = model.feature_info
    usable = [s for s in stages if input_size // s["reduction"] >= min_cells]
    return model.get_submodule((usable or stages[:1])[-1]["module"])


def normalize(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float32 in channels-last memory, the one input convention of every stage."""
    return standardize(batch_uint8.float() / 255.0)


def standardize(batch: torch.Tensor) -> torch.Tensor:
    """Float (B, C, H, W) in [0, 1] -> normalised, channels-last (the layout `create` gives the weights)."""
    return ((batch - NORM_MEAN) / NORM_STD).contiguous(memory_format=torch.channels_last)
