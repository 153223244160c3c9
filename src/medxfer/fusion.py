"""Feature fusion: deep features from several fine-tuned CNNs become one matrix for the classic-ML classifiers.

Each model's features are standardised on its own (so a model with large activations does not dominate the
concatenation), rows are aligned by image id, and an optional PCA or supervised selection (ANOVA F, k best)
shrinks the fused matrix. Every statistic is fitted on the train split only, so nothing about val/test leaks
into the classifiers.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.feature_selection import f_classif
from sklearn.preprocessing import StandardScaler

from medxfer.identity import from_array, to_array
from medxfer.io import atomic_path, save_npz, write_json
from medxfer.sections import FusionSection

SPLITS: tuple[str, ...] = ("train", "val", "test")
REQUIRED_KEYS: tuple[str, ...] = tuple(f"{k}_{s}" for s in SPLITS for k in ("X", "y", "ids")) + ("classes",)


def is_ordinal(data: Mapping[str, np.ndarray]) -> bool:
    """Whether a feature file's classes are grades (its CNN's data set said `ordinal: true`)."""
    return bool(data.get("ordinal", False))


def load_feature_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load and validate one feature .npz, so a broken file fails here with its name, not deep inside sklearn."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read feature file: {exc}") from exc
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ValueError(f"{path}: missing keys {missing} (a feature file needs {list(REQUIRED_KEYS)})")
    classes = data["classes"]
    if classes.ndim != 1 or classes.size == 0:
        raise ValueError(f"{path}: 'classes' must be a non-empty 1-D array of class names, got shape {classes.shape}")
    data["classes"] = classes.astype(str)
    dims = set()
    seen: dict[str, np.ndarray] = {}
    for split in SPLITS:
        x, y, ids = data[f"X_{split}"], data[f"y_{split}"], data[f"ids_{split}"]
        if x.ndim != 2:
            raise ValueError(f"{path}: X_{split} must be 2-D (n, d), got shape {x.shape}")
        n = x.shape[0]
        if y.shape != (n,) or ids.shape != (n,):
            raise ValueError(f"{path}: split '{split}' has X {x.shape}, y {y.shape}, ids {ids.shape}; lengths differ")
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"{path}: X_{split} must be numeric, got dtype {x.dtype}")
        if not np.all(np.isfinite(x)):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise ValueError(f"{path}: X_{split} holds {bad} non-finite values (NaN/inf)")
        if n and not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: y_{split} must hold integer labels, got dtype {y.dtype}")
        if n and (y.min() < 0 or y.max() >= classes.size):
            raise ValueError(f"{path}: y_{split} has labels outside 0..{classes.size - 1} (classes {list(classes)})")
        ids = ids.astype(str)
        unique, counts = np.unique(ids, return_counts=True)
        if unique.size != n:
            raise ValueError(f"{path}: split '{split}' repeats ids, e.g. {list(unique[counts > 1][:3])}")
        for other, other_ids in seen.items():
            shared = np.intersect1d(other_ids, ids)
            if shared.size:
                raise ValueError(f"{path}: ids {list(shared[:3])} are in both '{other}' and '{split}' (leakage)")
        seen[split] = ids
        data[f"X_{split}"] = x
        data[f"y_{split}"] = y.astype(np.int64)
        data[f"ids_{split}"] = ids
        dims.add(x.shape[1])
        study_key = f"study_{split}"
        if study_key in data:
            if data[study_key].shape != (n,):
                raise ValueError(f"{path}: {study_key} has shape {data[study_key].shape}, expected ({n},)")
            data[study_key] = data[study_key].astype(str)
    if len(dims) != 1:
        raise ValueError(f"{path}: feature dimension differs between splits: {sorted(dims)}")
    return data


def feature_identity(data: Mapping[str, np.ndarray], path: str | os.PathLike) -> dict[str, Any] | None:
    """The result identity a feature file carries (medxfer.identity); None for features of a model without one."""
    return from_array(data["identity"], path, "features") if "identity" in data else None


def _fused_identity(files: Sequence[Mapping[str, np.ndarray]], paths: Sequence[Path]) -> dict[str, Any] | None:
    """The inputs' shared run (target, init, seed) with features `fused`; an error for features of different runs."""
    found = [feature_identity(data, path) for data, path in zip(files, paths, strict=True)]
    if any(ident is None for ident in found):
        return None
    run = {k: v for k, v in found[0].items() if k != "features"}
    for ident, path in zip(found, paths, strict=True):
        if {k: v for k, v in ident.items() if k != "features"} != run:
            raise ValueError(f"{path}: features of {ident} cannot be fused with those of {found[0]} ({paths[0]})")
    return run | {"features": "fused"}


def _align(reference: np.ndarray, ids: np.ndarray, path: Path, ref_path: Path, split: str) -> np.ndarray:
    """Row index into `ids` that puts it in `reference` order; the two must hold the same set of ids."""
    if ids.size != reference.size or not np.array_equal(np.sort(ids), np.sort(reference)):
        missing = np.setdiff1d(reference, ids)
        extra = np.setdiff1d(ids, reference)
        raise ValueError(
            f"{path}: split '{split}' ids differ from {ref_path}: {missing.size} missing (e.g. {list(missing[:3])}),"
            f" {extra.size} extra (e.g. {list(extra[:3])})"
        )
    sorter = np.argsort(ids, kind="stable")
    return sorter[np.searchsorted(ids, reference, sorter=sorter)]


@dataclass
class Fusion:
    """The fitted fusion: per-model scalers, then the kept columns or a PCA; all fitted on train rows only.

    `transform` maps new per-model feature blocks (same models, same order) to the fused space, so perturbed or
    new images go through exactly the statistics the classifiers were trained with.
    """

    scalers: list[StandardScaler | None]
    kept: np.ndarray | None = None
    pca: PCA | None = None
    selection_report: dict[str, Any] = field(default_factory=lambda: {"used": False})
    pca_report: dict[str, Any] = field(default_factory=lambda: {"used": False})

    def transform(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        if len(blocks) != len(self.scalers):
            raise ValueError(f"fusion was fitted on {len(self.scalers)} models, got {len(blocks)} feature blocks")
        scaled = [
            scaler.transform(x) if scaler is not None and x.shape[0] else x.astype(np.float64)
            for scaler, x in zip(self.scalers, blocks, strict=True)
        ]
        fused = np.concatenate(scaled, axis=1)
        if self.kept is not None:
            fused = fused[:, self.kept]
        if self.pca is not None:
            fused = self.pca.transform(fused) if fused.shape[0] else fused[:, : self.pca.n_components_]
        return fused


def fit_fusion(
    train_blocks: Sequence[np.ndarray],
    y_train: np.ndarray,
    settings: FusionSection,
    seed: int,
    names: Sequence[str] | None = None,
) -> Fusion:
    """Fit the fusion on the train rows of each model's features (aligned, same order for every model)."""
    standardize, pca_components, select_k = settings.standardize, settings.pca_components, settings.select_k
    names = list(names or [f"model {i}" for i in range(len(train_blocks))])
    scalers: list[StandardScaler | None] = []
    for x, name in zip(train_blocks, names, strict=True):
        if standardize and x.shape[0] == 0:
            raise ValueError(f"{name}: cannot standardise on an empty train split")
        scalers.append(StandardScaler().fit(x.astype(np.float64)) if standardize else None)
    fusion = Fusion(scalers)
    fused = fusion.transform(train_blocks)
    concat_dim = int(fused.shape[1])
    if select_k is not None:
        if pca_components is not None:
            raise ValueError("choose either pca_components or select_k for the fused features, not both")
        if isinstance(select_k, bool) or not isinstance(select_k, int) or not 1 <= select_k <= concat_dim:
            raise ValueError(f"select_k={select_k!r} must be an int in 1..{concat_dim} (the fused dims)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant features: F is NaN, they rank last
            scores, _ = f_classif(fused, y_train)
        fusion.kept = np.sort(np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[:select_k])
        owner = np.repeat(np.arange(len(train_blocks)), [int(x.shape[1]) for x in train_blocks])
        fusion.selection_report = {
            "used": True,
            "k": select_k,
            "score": "anova_f",
            "kept_per_model": [int(np.sum(owner[fusion.kept] == i)) for i in range(len(train_blocks))],
        }
    if pca_components is not None:
        n_train = fused.shape[0]
        limit = min(n_train, concat_dim)
        if isinstance(pca_components, bool) or not isinstance(pca_components, (int, float)):
            raise ValueError(f"pca_components must be None, an int or a float in (0, 1); got {pca_components!r}")
        if isinstance(pca_components, int) and not 1 <= pca_components <= limit:
            raise ValueError(
                f"pca_components={pca_components} must be in 1..{limit}"
                f" (min of {n_train} train rows and {concat_dim} fused dims)"
            )
        if isinstance(pca_components, float) and not 0.0 < pca_components < 1.0:
            raise ValueError(f"pca_components={pca_components} as a float is a variance fraction and must be in (0, 1)")
        fusion.pca = PCA(n_components=pca_components, svd_solver="full", random_state=seed).fit(fused)
        fusion.pca_report = {
            "used": True,
            "requested": pca_components,
            "n_components": int(fusion.pca.n_components_),
            "explained_variance_ratio": float(np.sum(fusion.pca.explained_variance_ratio_)),
        }
    return fusion


def _aligned(paths: Sequence[Path]) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The validated files and, per file, each split's features in the first file's row order."""
    files = [load_feature_file(p) for p in paths]
    ref, ref_path = files[0], paths[0]
    aligned = []
    for data, path in zip(files, paths, strict=True):
        if not np.array_equal(data["classes"], ref["classes"]):
            raise ValueError(f"{path}: classes {list(data['classes'])} differ from {ref_path}: {list(ref['classes'])}")
        rows = {split: _align(ref[f"ids_{split}"], data[f"ids_{split}"], path, ref_path, split) for split in SPLITS}
        for split in SPLITS:
            y = data[f"y_{split}"][rows[split]]
            if not np.array_equal(y, ref[f"y_{split}"]):
                wrong = ref[f"ids_{split}"][y != ref[f"y_{split}"]]
                raise ValueError(
                    f"{path}: split '{split}' labels differ from {ref_path} for {wrong.size} ids,"
                    f" e.g. {list(wrong[:3])}"
                )
        aligned.append({split: data[f"X_{split}"][rows[split]].astype(np.float64) for split in SPLITS})
    return files, aligned


def save_fusion(fusion: Fusion, path: str | os.PathLike) -> None:
    """The fitted transform as skops (sklearn and numpy types only), so robustness checks and bundles map new rows
    with exactly the statistics the classifiers were trained on, without refitting (a full SVD on big train sets)."""
    from medxfer.classifiers import skops_io

    with atomic_path(Path(path)) as tmp:
        skops_io().dump({"scalers": fusion.scalers, "kept": fusion.kept, "pca": fusion.pca}, tmp)


def load_fusion(path: str | os.PathLike) -> Fusion:
    """A transform save_fusion wrote; a file holding types beyond sklearn and numpy is refused."""
    from medxfer.classifiers import load_sklearn_objects

    saved = load_sklearn_objects(path)
    return Fusion(saved["scalers"], saved["kept"], saved["pca"])


def fuse_features(
    feature_paths: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    report_path: str | os.PathLike,
    settings: FusionSection,
    seed: int,
    transform_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Fuse per-model feature files into one, in the order of the first file's ids; returns the report dict.

    `settings.pca_components`: None (no PCA), an int (number of components) or a float in (0, 1) (fraction of train
    variance to keep). `settings.select_k`: keep the k fused dimensions with the highest ANOVA F-score against the
    train labels (supervised selection, an alternative to PCA; the two cannot be combined). `transform_path`: where
    the fitted transform goes (save_fusion), for new rows later.
    Long on purpose: the order of steps (align, fit on train only, transform every split, record) is the
    guarantee that nothing fitted here sees val or test rows, and it reads best in one place.
    """
    paths = [Path(p) for p in feature_paths]
    if not paths:
        raise ValueError("fuse_features needs at least one feature file")
    files, aligned = _aligned(paths)
    ref = files[0]
    fusion = fit_fusion(
        [blocks["train"] for blocks in aligned], ref["y_train"], settings, seed, [str(p) for p in paths]
    )
    concat_dim = int(sum(blocks["train"].shape[1] for blocks in aligned))
    fused = {split: fusion.transform([blocks[split] for blocks in aligned]) for split in SPLITS}
    selection_report, pca_report = fusion.selection_report, fusion.pca_report

    arrays: dict[str, np.ndarray] = {"classes": ref["classes"]}
    arrays |= {"ordinal": np.array(True)} if is_ordinal(ref) else {}
    fused_identity = _fused_identity(files, paths)
    if fused_identity is not None:
        arrays["identity"] = to_array(fused_identity)
    for split in SPLITS:
        arrays[f"X_{split}"] = np.ascontiguousarray(fused[split], dtype=np.float32)
        arrays[f"y_{split}"] = ref[f"y_{split}"]
        arrays[f"ids_{split}"] = ref[f"ids_{split}"]
    with_study = all(f"study_{split}" in data for data in files for split in SPLITS)
    if with_study:
        for split in SPLITS:
            arrays[f"study_{split}"] = ref[f"study_{split}"]
    save_npz(out_path, **arrays)
    if transform_path is not None:
        save_fusion(fusion, transform_path)

    report: dict[str, Any] = {
        **({} if fused_identity is None else {"identity": fused_identity}),
        "inputs": [str(p) for p in paths],
        "models": [{"path": str(p), "dim": int(d["X_train"].shape[1])} for p, d in zip(paths, files, strict=True)],
        "concat_dim": concat_dim,
        "fused_dim": int(arrays["X_train"].shape[1]),
        "n": {split: int(arrays[f"y_{split}"].shape[0]) for split in SPLITS},
        "classes": [str(c) for c in ref["classes"]],
        "standardize": bool(settings.standardize),
        "pca": pca_report,
        "selection": selection_report,
        "study_ids": with_study,
        "seed": int(seed),
        "output": str(out_path),
    }
    write_json(report_path, report)
    return report
