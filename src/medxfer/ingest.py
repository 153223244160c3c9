"""Turn a raw data set (MURA folders, class folders, CSV manifest, DICOM files or series, .npz arrays) into a
checked manifest and a quarantine list.

Every candidate image is opened and decoded once here, so a corrupt file is caught before training and recorded
with its reason instead of crashing a later stage. Splits are by patient and checked for leakage.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medxfer.imaging import ImageError, content_hash, dicom_ids, is_dicom, npz_array, npz_ref, parse_npz_ref, read_image
from medxfer.io import atomic_path, write_json

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
NO_LABEL = "none"
NEGATIVE_NAMES = ("normal", "negative", "no_finding", "0", "false", NO_LABEL)
SPLITS = ("train", "val", "test")
FOLDER_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"} | {
    "test": "test"
}
MURA_STUDY = re.compile(r"^study(?P<n>\d+)_(?P<label>positive|negative)$")
MURA_SPLITS = {"train": "train", "valid": "test"}
SALT_ENV = "MEDXFER_SALT"
DEFAULT_SALT = "medxfer-default-salt"
MANIFEST_COLUMNS = ["image_id", "path", "patient_id", "study_id", "label", "label_name", "split", "sha256", "mask"]
MANIFEST_FIELDS = ("path", "label", "patient_id", "study_id", "split", "image_id")
NPZ_CLASS_KEYS = ("label_names", "classes")


class IngestError(RuntimeError):
    """The data set as a whole cannot be used (too many rejections, leakage, no images)."""


@dataclass
class Found:
    """What a reader found: candidate rows (path, label_name, patient_id, study_id, split[, source_id]), files it
    rejected with a reason, and the class order the source itself defines (e.g. an npz `label_names`), if any."""

    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    classes: list[str] | None = None

    def reject(self, path: str | Path, reason: str) -> None:
        self.rejected.append({"path": str(path), "reason": reason})


def salt_of(dataset: Mapping[str, Any]) -> str:
    """The pseudonymisation salt: config `privacy.salt` (top level or per data set), else $MEDXFER_SALT."""
    salt = (dataset.get("privacy") or {}).get("salt")
    return salt if salt else os.environ.get(SALT_ENV, DEFAULT_SALT)


def pseudonymize(raw_id: str, salt: str | None = None) -> str:
    """Salted hash of a patient or study id, so no real identifier reaches results/."""
    salt = salt if salt is not None else os.environ.get(SALT_ENV, DEFAULT_SALT)
    return hashlib.sha256(f"{salt}:{raw_id}".encode()).hexdigest()[:16]


def _looks_like_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or is_dicom(path)


def _visible_files(folder: Path) -> list[Path]:
    """Files under `folder`, sorted, without hidden files and DICOMDIR indexes (they hold no image)."""
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.name.upper() != "DICOMDIR"
    ]


def _inside(root: Path, relative: str | Path, what: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise IngestError(f"{what} {relative} is outside the data set root {root}")
    return path


def _read_mura(root: Path, dataset: Mapping[str, Any]) -> Found:
    found = Found()
    parts = {p.upper() for p in dataset.get("body_parts", [])}
    for split_dir, split in MURA_SPLITS.items():
        for path in sorted((root / split_dir).glob("XR_*/patient*/study*/*")):
            part, patient, study = path.parts[-4], path.parts[-3], path.parts[-2]
            if parts and part.upper() not in parts:
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                found.reject(path, f"not an image file extension ({path.suffix})")
                continue
            match = MURA_STUDY.match(study)
            if not match:
                found.reject(path, f"study folder '{study}' is not study<N>_<label>")
                continue
            found.rows.append(
                {
                    "path": str(path.relative_to(root)),
                    "label_name": match["label"],
                    "patient_id": f"{part}/{patient}",
                    "study_id": f"{part}/{patient}/{study}",
                    "split": split,
                }
            )
    if not found.rows and not found.rejected:
        raise IngestError(f"{root}: no MURA images found under train/ or valid/ (XR_*/patient*/study*/image*.png)")
    return found


def _read_imagefolder(root: Path, dataset: Mapping[str, Any]) -> Found:
    """root/<class>/**/<image>, or root/<split>/<class>/**/<image> when every top folder is a split name.
    With `labels: none`, every image anywhere under root, labelled 'none' (for self-supervised pretraining)."""
    found = Found()
    if dataset.get("labels") == "none":
        for path in _visible_files(root):
            rel = str(path.relative_to(root))
            if _looks_like_image(path):
                row = {"path": rel, "label_name": NO_LABEL, "patient_id": rel, "study_id": rel, "split": None}
                found.rows.append(row)
            else:
                found.reject(rel, f"not an image file (extension '{path.suffix}', no DICOM preamble)")
        if not found.rows:
            raise IngestError(f"{root}: no images found (unlabeled image folder)")
        return found
    tops = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    by_split = bool(tops) and all(d.name.lower() in FOLDER_SPLITS for d in tops)
    bases = [(d, FOLDER_SPLITS[d.name.lower()]) for d in tops] if by_split else [(root, None)]
    for base, split in bases:
        for path in _visible_files(base):
            rel = path.relative_to(root)
            depth = len(path.relative_to(base).parts)
            if depth < 2:
                found.reject(rel, f"not inside a class folder of {base}")
            elif not _looks_like_image(path):
                found.reject(rel, f"not an image file (extension '{path.suffix}', no DICOM preamble)")
            else:
                label = path.relative_to(base).parts[0]
                found.rows.append(
                    {
                        "path": str(rel),
                        "label_name": label,
                        "patient_id": str(rel),
                        "study_id": str(rel),
                        "split": split,
                    }
                )
    if not found.rows and not found.rejected:
        raise IngestError(f"{root}: no images found in class folders (<class>/<image> or <split>/<class>/<image>)")
    return found


def _manifest_table(manifest: Path, columns: Mapping[str, str]) -> pd.DataFrame:
    """The manifest with its columns renamed to medxfer's names (`columns` maps ours -> the file's)."""
    if not manifest.is_file():
        raise IngestError(f"{manifest}: manifest file not found")
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    rename = {theirs: ours for ours, theirs in columns.items() if theirs != ours}
    shadowed = [c for c in MANIFEST_FIELDS if c in table.columns and columns.get(c, c) != c]
    table = table.drop(columns=shadowed).rename(columns=rename)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        wanted = [columns.get(c, c) for c in sorted(missing)]
        raise IngestError(f"{manifest}: missing column(s) {wanted}; found {list(table.columns)}")
    return table


def _read_manifest(root: Path, dataset: Mapping[str, Any]) -> Found:
    """Rows of a CSV manifest; a path that is a folder (a DICOM series) gives one row per image file inside it."""
    manifest = Path(dataset["manifest"])
    table = _manifest_table(manifest, dataset.get("columns") or {})
    found, root_resolved = Found(), root.resolve()
    for line, record in enumerate(table.to_dict("records"), start=2):
        where = f"manifest line {line}"
        path = (root / record["path"]).resolve()
        split = record.get("split", "")
        if not path.is_relative_to(root_resolved):
            found.reject(record["path"], f"{where}: path is outside {root}")
        elif not record["label"]:
            found.reject(record["path"], f"{where}: empty label")
        elif split and split not in SPLITS:
            found.reject(record["path"], f"{where}: unknown split '{split}'")
        elif path.is_dir():
            _add_series(found, root_resolved, path, record, where)
        else:
            rel = str(path.relative_to(root_resolved))
            patient = record.get("patient_id") or record["path"]
            row = {"path": rel, "label_name": record["label"], "patient_id": patient}
            row |= {"study_id": record.get("study_id") or patient, "split": split or None}
            found.rows.append(row | ({"source_id": record["image_id"]} if record.get("image_id") else {}))
    return found


def _add_series(found: Found, root: Path, folder: Path, record: dict, where: str) -> None:
    """Every image file of a series folder becomes a row with the folder's label, patient and study."""
    files = _visible_files(folder)
    if not files:
        found.reject(folder.relative_to(root), f"{where}: folder has no files")
    patient = record.get("patient_id") or record["path"]
    study = record.get("study_id") or record["path"]
    for path in files:
        rel = path.relative_to(root)
        if not _looks_like_image(path):
            found.reject(rel, f"{where}: not a DICOM or image file in series folder (no DICM preamble)")
            continue
        row = {"path": str(rel), "label_name": record["label"], "patient_id": patient, "study_id": study}
        found.rows.append(row | {"split": record.get("split") or None})


def _npz_layout(keys: list[str], layout: str, file: Path) -> str:
    if layout != "auto":
        return layout
    if any(f"{s}_images" in keys for s in SPLITS):
        return "medmnist"
    if "images" in keys:
        return "flat"
    raise IngestError(f"{file}: neither MedMNIST keys (train_images, ...) nor a flat 'images' key; has {keys}")


def _npz_label_names(labels: np.ndarray, names: list[str] | None, file: Path) -> list[str | None]:
    """Class names per row (None = unknown label). (n,) or (n,1): class indices; (n,k>1): multi-label 0/1,
    stored as the ';'-joined names of the set labels ('none' for an empty set); string labels are names."""
    if labels.dtype.kind in "US":
        return [str(v) for v in labels.reshape(len(labels))]
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 1:
        return [names[int(v)] if 0 <= v < len(names) else None for v in labels]
    if labels.ndim != 2:
        raise IngestError(f"{file}: labels must be (n,), (n, 1) or (n, k) multi-label, got shape {labels.shape}")
    if len(names) != labels.shape[1]:
        raise IngestError(f"{file}: multi-label labels have {labels.shape[1]} columns but {len(names)} class names")
    valid = np.isin(labels, (0, 1)).all(axis=1)
    return [
        (";".join(n for n, v in zip(names, row, strict=True) if v) or NO_LABEL) if ok else None
        for row, ok in zip(labels, valid, strict=True)
    ]


def _npz_class_names(dataset: Mapping[str, Any], meta: dict, labels: list[np.ndarray]) -> list[str] | None:
    """Class names: config `classes`, else the file's `label_names`/`classes`, else class_0.. for numeric labels."""
    if dataset.get("classes"):
        return list(dataset["classes"])
    for key in NPZ_CLASS_KEYS:
        if key in meta:
            return meta[key].astype(str).tolist()
    numeric = [a for a in labels if a.dtype.kind in "biuf" and a.size]
    if not numeric:
        return None
    multi = numeric[0].ndim == 2 and numeric[0].shape[1] > 1
    count = numeric[0].shape[1] if multi else int(max(a.max() for a in numeric)) + 1
    return [f"class_{j}" for j in range(count)]


def _read_npz(root: Path, dataset: Mapping[str, Any]) -> Found:
    """MedMNIST layout ({split}_images/{split}_labels, splits kept) or flat layout (images, labels, optional
    patient_ids, image_ids, split). Rows address images as `<file>#<key>[<index>]`."""
    file = _inside(root, dataset["file"], "npz file")
    rel = file.relative_to(root.resolve())
    try:
        with np.load(file, allow_pickle=False) as data:
            keys = list(data.files)
            meta = {k: data[k] for k in keys if not k.endswith("images") and k != "meta"}
    except Exception as err:
        raise IngestError(f"{file}: not a readable .npz file ({err})") from None
    layout = _npz_layout(keys, dataset.get("layout", "auto"), file)
    parts = [(f"{s}_images", f"{s}_labels", s) for s in SPLITS if f"{s}_images" in keys]
    label_keys = [label for _, label, _ in parts] if layout == "medmnist" else ["labels"]
    names = _npz_class_names(dataset, meta, [meta[k] for k in label_keys if k in meta])
    found = Found(classes=names)
    for image_key, label_key, split in parts if layout == "medmnist" else [("images", "labels", None)]:
        if label_key not in meta:
            raise IngestError(f"{file}: has '{image_key}' but no '{label_key}'")
        n = len(npz_array(file, image_key))
        extra = {k: meta[k] for k in ("patient_ids", "image_ids", "split") if layout == "flat" and k in meta}
        for key, values in [(label_key, meta[label_key])] + list(extra.items()):
            if len(values) != n:
                raise IngestError(f"{file}: '{key}' has {len(values)} entries but '{image_key}' has {n}")
        labels = _npz_label_names(meta[label_key], names, file)
        for i, label in enumerate(labels):
            ref = npz_ref(rel, image_key, i)
            if label is None:
                found.reject(ref, f"unknown label {meta[label_key][i].tolist()} (classes: {names})")
                continue
            image_id = str(extra["image_ids"][i]) if "image_ids" in extra else None
            patient = str(extra["patient_ids"][i]) if "patient_ids" in extra else image_id or ref
            given = str(extra["split"][i]).strip().lower() if "split" in extra else None
            row_split = FOLDER_SPLITS.get(given, "?") if given else split
            if row_split == "?":
                found.reject(ref, f"unknown split '{extra['split'][i]}' (allowed: {sorted(FOLDER_SPLITS)})")
                continue
            row = {"path": ref, "label_name": label, "patient_id": patient, "study_id": image_id or ref}
            found.rows.append(row | {"split": row_split} | ({"source_id": image_id} if image_id else {}))
    return found


def _read_dicom(root: Path, dataset: Mapping[str, Any]) -> Found:
    """DICOM through a manifest when one is configured, else found by walking the tree (see _read_dicom_tree)."""
    return _read_manifest(root, dataset) if dataset.get("manifest") else _read_dicom_tree(root, dataset)


def _read_dicom_tree(root: Path, dataset: Mapping[str, Any]) -> Found:
    """Every DICOM file under root. Labels come from class folders (`labels: folder`, the imagefolder layout) or
    are absent (`labels: none`, for self-supervised pretraining); patient and study come from the DICOM header
    (PatientID, StudyInstanceUID), so slices of one patient share a split."""
    found = _read_imagefolder(root, dataset)
    rows, found.rows = found.rows, []
    for row in rows:
        path = root / row["path"]
        if not is_dicom(path):
            found.reject(row["path"], "not a DICOM file (no DICM preamble); use format csv/imagefolder for PNG/JPEG")
            continue
        try:
            patient, study = dicom_ids(path)
        except ImageError as err:
            found.reject(row["path"], err.reason)
            continue
        found.rows.append(row | {"patient_id": patient or row["path"], "study_id": study or patient or row["path"]})
    return found


READERS: dict[str, Callable[[Path, Mapping[str, Any]], Found]] = {
    "mura": _read_mura,
    "imagefolder": _read_imagefolder,
    "csv": _read_manifest,
    "dicom": _read_dicom,
    "npz": _read_npz,
}


def _canonical_label(name: str, classes: list[str] | None) -> str | None:
    """The label as configured class name(s); integer labels index `classes`; None if a label is unknown.
    Multi-label values ('a;b') are sorted in class order."""
    parts = [p.strip() for p in name.split(";") if p.strip()]
    if classes is None:
        return ";".join(sorted(set(parts))) if len(parts) > 1 else name
    known = []
    for part in parts:
        if part in classes:
            known.append(part)
        elif part.isdigit() and int(part) < len(classes):
            known.append(classes[int(part)])
        elif part != NO_LABEL:
            return None
    return ";".join(sorted(set(known), key=classes.index)) or NO_LABEL


def _check_labels(found: Found, classes: list[str] | None) -> list[dict]:
    """Rows whose labels are known (mapped to configured class names); the others are rejected."""
    kept = []
    for row in found.rows:
        label = _canonical_label(row["label_name"], classes)
        if label is None:
            found.reject(row["path"], f"unknown label '{row['label_name']}' (configured classes: {classes})")
        else:
            kept.append(row | {"label_name": label})
    return kept


def _drop_duplicates(found: Found, rows: list[dict]) -> list[dict]:
    """The first row per path and per source image id; later ones are rejected (they would count twice)."""
    paths, ids, kept = set(), set(), []
    for row in rows:
        source_id = row.get("source_id")
        if row["path"] in paths:
            found.reject(row["path"], "duplicate path: listed more than once")
        elif source_id is not None and source_id in ids:
            found.reject(row["path"], f"duplicate image id '{source_id}'")
        else:
            paths.add(row["path"])
            ids.add(source_id)
            kept.append(row)
    return kept


def _decode_all(root: Path, rows: list[dict], dataset: Mapping[str, Any], found: Found) -> list[dict]:
    """Rows whose image decodes, with its content hash; the others are rejected with the decoder's reason."""
    windows = dataset.get("windows", [[40, 400]])
    accepted = []
    for row in rows:
        path = root / row["path"]
        try:
            read_image(path, dataset["modality"], windows)
            digest = content_hash(path)
        except ImageError as err:
            found.reject(row["path"], err.reason)
            continue
        accepted.append(row | {"sha256": digest})
    return accepted


def label_order(names: list[str], classes: list[str] | None) -> list[str]:
    """Class order of the manifest: the configured or source-defined order (classes present only), label sets
    after single labels; otherwise sorted with the normal/negative class first."""
    present = set(names)
    if classes is None:
        return class_order(list(present))
    base = [NO_LABEL] + list(classes) if NO_LABEL in present and NO_LABEL not in classes else list(classes)
    singles = [c for c in base if c in present]
    combos = sorted(present - set(singles), key=lambda n: (n.count(";"), [base.index(p) for p in n.split(";")]))
    return singles + combos


def class_order(names: list[str]) -> list[str]:
    """Sorted class names with the normal/negative class first, so label 1 is the finding in binary tasks."""
    unique = sorted(set(names))
    negatives = [n for n in unique if n.lower() in NEGATIVE_NAMES]
    return negatives[:1] + [n for n in unique if n not in negatives[:1]]


def assign_splits(frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """Patient-level, label-stratified, seeded split; splits given by the data set (e.g. MURA test) are kept."""
    split = frame["split"].copy()
    rng = np.random.default_rng(seed)
    has_test, has_val = (split == "test").any(), (split == "val").any()
    # Given 'train' rows still need a val share carved from them unless the data set gives val (MedMNIST) too.
    open_rows = split.isna() | ((split == "train") & (not has_val))
    pool = frame[open_rows]
    patients = pool.groupby("patient_id")["label"].agg(lambda s: int(s.mode().iloc[0]))
    for _, group in patients.groupby(patients):
        ids = group.index.to_numpy()
        ids = ids[rng.permutation(len(ids))]
        n_test = 0 if has_test else int(round(len(ids) * test_fraction))
        n_val = 0 if has_val else int(round(len(ids) * val_fraction))
        if len(ids) >= 3:
            n_val = max(n_val, 1) if not has_val else 0
            n_test = max(n_test, 1) if not has_test else 0
        assigned = {pid: "test" for pid in ids[:n_test]} | {pid: "val" for pid in ids[n_test : n_test + n_val]}
        for pid in ids[n_test + n_val :]:
            assigned[pid] = "train"
        mask = frame["patient_id"].isin(ids) & open_rows
        split[mask] = frame.loc[mask, "patient_id"].map(assigned)
    return split


def subsample_train(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A seeded, label-stratified share of the training patients (at least one per label); val and test untouched.
    The small-labelled-set setting where the choice of pretraining matters most."""
    if fraction >= 1:
        return frame
    train = frame[frame["split"] == "train"]
    patients = train.groupby("patient_id")["label"].agg(lambda s: int(s.mode().iloc[0]))
    rng = np.random.default_rng(seed)
    kept = []
    for _, group in patients.groupby(patients):
        ids = group.index.to_numpy()[rng.permutation(len(group))]
        kept.extend(ids[: max(1, int(round(len(ids) * fraction)))])
    keep = (frame["split"] != "train") | frame["patient_id"].isin(kept)
    return frame[keep].reset_index(drop=True)


def check_leakage(frame: pd.DataFrame) -> list[str]:
    """Hashes of images that appear in more than one split."""
    splits_per_hash = frame.groupby("sha256")["split"].nunique()
    return sorted(splits_per_hash[splits_per_hash > 1].index)


def drop_leaked(table: pd.DataFrame, found: Found) -> pd.DataFrame:
    """Keep each duplicated image only in its earliest split (train < val < test); reject the other copies."""
    rank = table["split"].map({s: i for i, s in enumerate(SPLITS)})
    first = rank.groupby(table["sha256"]).transform("min")
    for row in table[rank != first].to_dict("records"):
        kept = SPLITS[int(first[table["path"] == row["path"]].iloc[0])]
        found.reject(
            row["path"], f"leakage: identical image is also in split '{kept}' (copy in '{row['split']}' dropped)"
        )
    return table[rank == first].reset_index(drop=True)


def _mask_for(masks: str | None, path: str) -> str:
    if not masks or parse_npz_ref(path):
        return ""
    mask = Path(masks) / Path(path).with_suffix(".png")
    return str(mask) if mask.is_file() else ""


def _label_and_split(
    rows: list[dict], classes: list[str] | None, dataset: Mapping[str, Any], seed: int
) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    order = label_order(table["label_name"].tolist(), classes)
    table["label"] = table["label_name"].map({c: i for i, c in enumerate(order)}).astype(int)
    table["split"] = assign_splits(table, dataset["val_fraction"], dataset["test_fraction"], seed)
    return table


def _write_quarantine(path: Path, rejected: list[dict]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rejected, columns=["path", "reason"]).to_csv(tmp, index=False)


def _check_rejections(name: str, dataset: Mapping[str, Any], n_rejected: int, total: int, found: Found) -> None:
    root, quarantine = dataset["root"], found.rejected
    if n_rejected == total:
        raise IngestError(f"data set '{name}': no usable images in {root} ({n_rejected} rejected)")
    if n_rejected > dataset["max_reject_fraction"] * total:
        first = "; ".join(f"{r['path']}: {r['reason']}" for r in quarantine[:3])
        raise IngestError(
            f"data set '{name}': {n_rejected} of {total} files rejected, more than max_reject_fraction="
            f"{dataset['max_reject_fraction']} (see quarantine.csv; paths relative to {root}); first: {first}"
        )


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
    found = READERS[dataset["format"]](root, dataset)
    rows = _drop_duplicates(found, _check_labels(found, dataset.get("classes")))
    accepted = _decode_all(root, rows, dataset, found)
    table = _label_and_split(accepted, dataset.get("classes") or found.classes, dataset, seed) if accepted else None
    leaked = check_leakage(table) if table is not None else []
    if leaked and dataset.get("leakage", "fail") == "drop":
        table, leaked = drop_leaked(table, found), []
    total = (0 if table is None else len(table)) + len(found.rejected)
    _write_quarantine(quarantine_path, found.rejected)
    if log is not None:
        log.info(
            "%s: %d files, %d accepted, %d quarantined", name, total, total - len(found.rejected), len(found.rejected)
        )
        for item in found.rejected[:20]:
            log.warning("quarantined %s: %s", item["path"], item["reason"])
    _check_rejections(name, dataset, len(found.rejected), total, found)
    if leaked:
        paths = table.loc[table["sha256"].isin(leaked[:3]), "path"].tolist()
        raise IngestError(
            f"data set '{name}': {len(leaked)} identical image(s) in more than one split, e.g. {paths} "
            "(set leakage: drop to keep only the first copy)"
        )
    n_train = int((table["split"] == "train").sum())
    table = subsample_train(table, dataset["train_fraction"], seed)
    if log is not None and dataset["train_fraction"] < 1:
        kept = int((table["split"] == "train").sum())
        fraction = dataset["train_fraction"]
        log.info("%s: train_fraction %.3g keeps %d of %d training images", name, fraction, kept, n_train)
    table["mask"] = [_mask_for(dataset.get("masks"), p) for p in table["path"]]
    salt = salt_of(dataset)
    table["patient_id"] = table["patient_id"].map(lambda raw: pseudonymize(str(raw), salt))
    table["study_id"] = table["study_id"].map(lambda raw: pseudonymize(str(raw), salt))
    table["image_id"] = [f"{name}-{i:06d}" for i in range(len(table))]
    table = table[MANIFEST_COLUMNS]
    with atomic_path(manifest_path) as tmp:
        table.to_csv(tmp, index=False)
    if log is not None:
        counts = table.groupby(["split", "label_name"]).size().to_dict()
        log.info("%s: classes %s; split x class counts %s", name, classes_of(table), counts)
    return table


def check_source_overlap(target_manifest: Path, source_manifests: Mapping[str, Path], out: Path) -> dict:
    """Target test images that are exact copies (same content hash) of an image in a pretraining source: a model
    pretrained on them has seen the test set, so the in-domain comparison would flatter it. Writes the finding to
    `out`, then fails if there is any overlap."""
    target = read_manifest(target_manifest)
    test = target[target["split"] == "test"]
    found: dict[str, list[str]] = {}
    for name, manifest in source_manifests.items():
        source_hashes = set(read_manifest(manifest)["sha256"])
        found[name] = sorted(test.loc[test["sha256"].isin(source_hashes), "path"])
    report = {
        "target": str(target_manifest),
        "n_test": len(test),
        "method": "sha256 of the file bytes, or of the raw array of an .npz entry (exact copies only)",
        "overlap": {name: {"count": len(paths), "examples": paths[:5]} for name, paths in found.items()},
    }
    write_json(out, report)
    overlapping = {name: paths for name, paths in found.items() if paths}
    if overlapping:
        detail = "; ".join(f"{n}: {len(p)} (e.g. {p[0]})" for n, p in overlapping.items())
        raise IngestError(f"{target_manifest}: test images also in a pretraining source ({detail}); see {out}")
    return report


def read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(
        path, dtype={"image_id": str, "patient_id": str, "study_id": str, "mask": str}, keep_default_na=False
    )


def classes_of(manifest: pd.DataFrame) -> list[str]:
    pairs = manifest[["label", "label_name"]].drop_duplicates().sort_values("label")
    return pairs["label_name"].tolist()
