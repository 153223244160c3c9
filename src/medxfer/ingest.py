"""Turn a raw data set (MURA folders, CSV manifest, DICOM files) into a checked manifest and a quarantine list.

Every candidate file is opened and decoded once here, so a corrupt file is caught before training and recorded
with its reason instead of crashing a later stage. Splits are by patient and checked for leakage.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medxfer.imaging import ImageError, read_image
from medxfer.io import atomic_path, sha256_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
NEGATIVE_NAMES = ("normal", "negative", "no_finding", "0", "false")
SPLITS = ("train", "val", "test")
MURA_STUDY = re.compile(r"^study(?P<n>\d+)_(?P<label>positive|negative)$")
MURA_SPLITS = {"train": "train", "valid": "test"}
SALT_ENV = "MEDXFER_SALT"
DEFAULT_SALT = "medxfer-default-salt"
MANIFEST_COLUMNS = ["image_id", "path", "patient_id", "study_id", "label", "label_name", "split", "sha256", "mask"]


class IngestError(RuntimeError):
    """The data set as a whole cannot be used (too many rejections, leakage, no images)."""


def pseudonymize(raw_id: str, salt: str | None = None) -> str:
    """Salted hash of a patient or study id, so no real identifier reaches results/."""
    salt = salt if salt is not None else os.environ.get(SALT_ENV, DEFAULT_SALT)
    return hashlib.sha256(f"{salt}:{raw_id}".encode()).hexdigest()[:16]


def _read_mura(root: Path, body_parts: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    rows, rejected = [], []
    parts = {p.upper() for p in body_parts}
    for split_dir, split in MURA_SPLITS.items():
        for path in sorted((root / split_dir).glob("XR_*/patient*/study*/*")):
            part, patient, study = path.parts[-4], path.parts[-3], path.parts[-2]
            if parts and part.upper() not in parts:
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                rejected.append({"path": str(path), "reason": f"not an image file extension ({path.suffix})"})
                continue
            match = MURA_STUDY.match(study)
            if not match:
                rejected.append({"path": str(path), "reason": f"study folder '{study}' is not study<N>_<label>"})
                continue
            rows.append(
                {
                    "path": str(path.relative_to(root)),
                    "label_name": match["label"],
                    "patient_id": f"{part}/{patient}",
                    "study_id": f"{part}/{patient}/{study}",
                    "split": split,
                }
            )
    if not rows and not rejected:
        raise IngestError(f"{root}: no MURA images found under train/ or valid/ (XR_*/patient*/study*/image*.png)")
    return pd.DataFrame(rows), rejected


def _read_manifest(root: Path, manifest: Path) -> tuple[pd.DataFrame, list[dict]]:
    if not manifest.is_file():
        raise IngestError(f"{manifest}: manifest file not found")
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise IngestError(f"{manifest}: missing column(s) {sorted(missing)}; found {list(table.columns)}")
    rows, rejected = [], []
    root_resolved = root.resolve()
    for line, record in enumerate(table.to_dict("records"), start=2):
        path = (root / record["path"]).resolve()
        if not path.is_relative_to(root_resolved):
            rejected.append({"path": record["path"], "reason": f"manifest line {line}: path is outside {root}"})
            continue
        if not record["label"]:
            rejected.append({"path": record["path"], "reason": f"manifest line {line}: empty label"})
            continue
        patient = record.get("patient_id") or record["path"]
        split = record.get("split", "")
        if split and split not in SPLITS:
            rejected.append({"path": record["path"], "reason": f"manifest line {line}: unknown split '{split}'"})
            continue
        rows.append(
            {
                "path": str(path.relative_to(root_resolved)),
                "label_name": record["label"],
                "patient_id": patient,
                "study_id": record.get("study_id") or patient,
                "split": split or None,
            }
        )
    return pd.DataFrame(rows), rejected


def class_order(names: list[str]) -> list[str]:
    """Sorted class names with the normal/negative class first, so label 1 is the finding in binary tasks."""
    unique = sorted(set(names))
    negatives = [n for n in unique if n.lower() in NEGATIVE_NAMES]
    return negatives[:1] + [n for n in unique if n not in negatives[:1]]


def assign_splits(frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """Patient-level, label-stratified, seeded split; splits given by the data set (e.g. MURA test) are kept."""
    split = frame["split"].copy()
    rng = np.random.default_rng(seed)
    todo = split.isna()
    fractions = {"test": test_fraction, "val": val_fraction}
    # Rows with a given 'train' split still need a val share carved from them; given 'test' rows stay.
    pool = frame[todo | (split == "train")]
    has_test = (split == "test").any()
    patients = pool.groupby("patient_id")["label"].agg(lambda s: int(s.mode().iloc[0]))
    for _, group in patients.groupby(patients):
        ids = group.index.to_numpy()
        ids = ids[rng.permutation(len(ids))]
        n_test = 0 if has_test else int(round(len(ids) * fractions["test"]))
        n_val = int(round(len(ids) * fractions["val"]))
        if len(ids) >= 3:
            n_val = max(n_val, 1)
            n_test = max(n_test, 1) if not has_test else 0
        assigned = {pid: "test" for pid in ids[:n_test]} | {pid: "val" for pid in ids[n_test : n_test + n_val]}
        for pid in ids[n_test + n_val :]:
            assigned[pid] = "train"
        mask = frame["patient_id"].isin(ids) & (todo | (split == "train"))
        split[mask] = frame.loc[mask, "patient_id"].map(assigned)
    return split


def check_leakage(frame: pd.DataFrame) -> list[str]:
    """Hashes of images that appear in more than one split."""
    splits_per_hash = frame.groupby("sha256")["split"].nunique()
    return sorted(splits_per_hash[splits_per_hash > 1].index)


def ingest_dataset(
    name: str,
    dataset: Mapping[str, Any],
    manifest_path: Path,
    quarantine_path: Path,
    seed: int = 0,
    log: Any = None,
) -> pd.DataFrame:
    """Read, check and split one data set; write manifest.csv and quarantine.csv atomically."""
    root = Path(dataset["root"])
    if not root.is_dir():
        raise IngestError(f"data set '{name}': root folder {root} does not exist")
    if dataset["format"] == "mura":
        frame, rejected = _read_mura(root, dataset.get("body_parts", []))
    else:
        frame, rejected = _read_manifest(root, Path(dataset["manifest"]))
    if frame.empty:
        frame = pd.DataFrame(columns=["path", "label_name", "patient_id", "study_id", "split"])
    windows = dataset.get("windows", [[40, 400]])
    accepted, hashes = [], []
    for record in frame.to_dict("records"):
        path = root / record["path"]
        try:
            read_image(path, dataset["modality"], windows)
        except ImageError as err:
            rejected.append({"path": str(path), "reason": err.reason})
            continue
        accepted.append(record)
        hashes.append(sha256_file(path))
    total = len(accepted) + len(rejected)
    quarantine = pd.DataFrame(rejected, columns=["path", "reason"])
    with atomic_path(quarantine_path) as tmp:
        quarantine.to_csv(tmp, index=False)
    if log is not None:
        log.info("%s: %d files, %d accepted, %d quarantined", name, total, len(accepted), len(rejected))
        for item in rejected[:20]:
            log.warning("quarantined %s: %s", item["path"], item["reason"])
    if not accepted:
        raise IngestError(f"data set '{name}': no usable images in {root} ({len(rejected)} rejected)")
    if len(rejected) > dataset["max_reject_fraction"] * total:
        first = "; ".join(f"{r['path']}: {r['reason']}" for r in rejected[:3])
        raise IngestError(
            f"data set '{name}': {len(rejected)} of {total} files rejected, more than max_reject_fraction="
            f"{dataset['max_reject_fraction']} (see {quarantine_path}); first: {first}"
        )
    table = pd.DataFrame(accepted)
    table["sha256"] = hashes
    classes = class_order(table["label_name"].tolist())
    table["label"] = table["label_name"].map({c: i for i, c in enumerate(classes)}).astype(int)
    table["split"] = assign_splits(table, dataset["val_fraction"], dataset["test_fraction"], seed)
    leaked = check_leakage(table)
    if leaked:
        paths = table.loc[table["sha256"].isin(leaked[:3]), "path"].tolist()
        raise IngestError(f"data set '{name}': {len(leaked)} identical image(s) in more than one split, e.g. {paths}")
    masks = dataset.get("masks")
    table["mask"] = [
        str(Path(masks) / Path(p).with_suffix(".png"))
        if masks and (Path(masks) / Path(p).with_suffix(".png")).is_file()
        else ""
        for p in table["path"]
    ]
    table["patient_id"] = table["patient_id"].map(pseudonymize)
    table["study_id"] = table["study_id"].map(pseudonymize)
    table["image_id"] = [f"{name}-{i:06d}" for i in range(len(table))]
    table = table[MANIFEST_COLUMNS]
    with atomic_path(manifest_path) as tmp:
        table.to_csv(tmp, index=False)
    if log is not None:
        counts = table.groupby(["split", "label_name"]).size().to_dict()
        log.info("%s: classes %s; split x class counts %s", name, classes, counts)
    return table


def read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(
        path, dtype={"image_id": str, "patient_id": str, "study_id": str, "mask": str}, keep_default_na=False
    )


def classes_of(manifest: pd.DataFrame) -> list[str]:
    pairs = manifest[["label", "label_name"]].drop_duplicates().sort_values("label")
    return pairs["label_name"].tolist()
