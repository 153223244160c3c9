"""Up-front checks of what a valid config points at: data, weights files and architectures that are not there would
otherwise fail hours into a run. Slow (imports timm), so `medxfer validate-config` runs them, not Snakefile parsing.
Paths are relative to the working directory, as every stage reads them."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medxfer import paths
from medxfer.config import pretrain_sources, pretrains


def used_datasets(config: Mapping[str, Any]) -> list[str]:
    """The data sets a run ingests: the fine-tuning targets and, with the in-domain init, the pretraining sources."""
    names = list(config["finetune"]["targets"]) + (pretrain_sources(config) if pretrains(config) else [])
    return list(dict.fromkeys(names))


def input_problems(config: Mapping[str, Any]) -> list[str]:
    """Every missing input the run needs and does not make itself, and every arch timm does not know; all at once."""
    problems = [p for name in used_datasets(config) for p in _dataset_problems(name, config["datasets"][name])]
    return problems + _weights_problems(config["finetune"]["imagenet_weights"]) + _arch_problems(config)


def _shown(path: Path) -> str:
    return str(path) if path.is_absolute() else f"{path} (relative to {Path.cwd()})"


def _dataset_problems(name: str, dataset: Mapping[str, Any]) -> list[str]:
    """Root, manifest, npz file and masks folder; none under a demo root, which rule synthesize_demo makes."""
    root = Path(dataset["root"])
    wanted = [("root", root, "folder")]
    if dataset["format"] in ("csv", "dicom") and dataset.get("manifest"):
        wanted.append(("manifest", Path(dataset["manifest"]), "file"))
    if dataset["format"] == "npz":
        wanted.append(("file", root / dataset["file"], "file"))
    if dataset.get("masks"):
        wanted.append(("masks", Path(dataset["masks"]), "folder"))
    if dataset.get("npz_masks"):
        wanted.append(("npz_masks.file", root / dataset["npz_masks"]["file"], "file"))
    generated = paths.generated_demo_set(root) is not None
    return [
        f"config key 'datasets.{name}.{key}': {kind} {_shown(path)} not found"
        for key, path, kind in wanted
        if not (generated and path.is_relative_to(root)) and not (path.is_dir() if kind == "folder" else path.is_file())
    ]


def _weights_problems(imagenet_weights: Mapping[str, str]) -> list[str]:
    """Every configured weights file, except the ones rule import_imagenet_weights makes from an installed package."""
    from medxfer.weights import PACKAGED

    problems = []
    for arch, file in imagenet_weights.items():
        imported = paths.IMPORTED_WEIGHTS.format(arch=arch)
        if (file == imported and arch in PACKAGED) or Path(file).is_file():
            continue
        hint = f"; the workflow makes {imported} itself" if arch in PACKAGED else ""
        problems.append(f"config key 'finetune.imagenet_weights.{arch}': file {_shown(Path(file))} not found{hint}")
    return problems


def _arch_problems(config: Mapping[str, Any]) -> list[str]:
    import timm

    problems = []
    for i, arch in enumerate(config["finetune"]["archs"]):
        if not timm.is_model(arch):
            close = difflib.get_close_matches(arch, timm.list_models(), n=3)
            suggestion = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"config key 'finetune.archs[{i}]': '{arch}' is not a timm architecture{suggestion}")
    return problems
