"""Format readers: each turns one raw layout (MURA folders, class folders, CSV manifest, DICOM files or series,
.npz arrays) into candidate rows and rejected files. They only find and describe files; decoding, label checks and
splitting happen once for every format in `medxfer.ingest`. Each takes a data set entry with the schema's defaults
filled in (medxfer.sections.dataset_entry, as ingest and the cache pass it).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medxfer.imaging import ImageError, dicom_ids, is_dicom, npz_array, npz_ref, withheld_note, withheld_warnings
from medxfer.ingestbase import NO_LABEL, SPLITS, Found, IngestError, printable
from medxfer.io import read_text

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
# Beside hidden entries (".*"): what operating systems, archivers and people leave in image folders; never data.
SKIPPED_NAMES = {"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r", "dicomdir", "__macosx"}
SKIPPED_STEMS = {"readme", "license", "licence"}
FOLDER_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"} | {
    "test": "test"
}
MURA_STUDY = re.compile(r"^study(?P<n>\d+)_(?P<label>positive|negative)$")
MURA_SPLITS = {"train": "train", "valid": "test"}
MURA_LAYOUT = ("XR_*", "patient*", "study*")
MANIFEST_FIELDS = ("path", "label", "patient_id", "study_id", "split", "image_id")
NPZ_CLASS_KEYS = ("label_names", "classes")


def looks_like_image(path: Path) -> bool:
    """By extension or DICOM preamble only: the real check is decoding, done once for all formats at ingest."""
    return path.suffix.lower() in IMAGE_SUFFIXES or is_dicom(path)


def _skipped(name: str) -> bool:
    return name.startswith(".") or name.lower() in SKIPPED_NAMES or name.split(".")[0].lower() in SKIPPED_STEMS


def walk_files(folder: Path, root: Path, found: Found) -> list[Path]:
    """Files under `folder`, sorted, the one walk of every reader. Links that stay inside root are followed, links
    that leave it, broken links, link loops and names that are not UTF-8 are quarantined; hidden and system files
    (Thumbs.db, README, .DS_Store, DICOMDIR) are noted in `found.skipped`."""
    files: list[Path] = []
    problem = _link_problem(folder, root.resolve())
    if problem:
        found.reject(folder.relative_to(root), problem)
    elif folder.is_dir():
        _walk_into(folder, root, root.resolve(), found, files, frozenset({folder.resolve()}))
    return sorted(files)


def _walk_into(
    folder: Path, root: Path, real_root: Path, found: Found, files: list[Path], ancestors: frozenset[Path]
) -> None:
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        path = Path(entry.path)
        rel = path.relative_to(root)
        problem = _link_problem(path, real_root) if entry.is_symlink() else None
        if _skipped(entry.name):
            found.skipped.append(printable(rel))
        elif not _utf8(entry.name):
            found.reject(rel, "name is not valid UTF-8 (shown with \\x escapes): rename it to be read")
        elif problem:
            found.reject(rel, problem)
        elif entry.is_dir():
            real = path.resolve()
            if real in ancestors:
                found.reject(rel, f"symbolic link loop: points to {real}, a folder that contains it")
            else:
                _walk_into(path, root, real_root, found, files, ancestors | {real})
        elif entry.is_file():
            files.append(path)
        else:
            found.reject(rel, "broken symbolic link" if entry.is_symlink() else "not a regular file or folder")


def _link_problem(path: Path, real_root: Path) -> str | None:
    """Why a path through symbolic links cannot be followed, or None: it must resolve to a place inside root."""
    try:
        target = path.resolve()
    except (RuntimeError, OSError):  # a chain of links that ends where it started
        return "symbolic link loop"
    if not target.is_relative_to(real_root):
        return f"symbolic link to {target}, outside the data set root {real_root}"
    return None


def _utf8(name: str) -> bool:
    """False for a name whose bytes are not UTF-8 (Python holds them as surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def inside_root(root: Path, relative: str | Path, what: str) -> Path:
    """`root / relative`, refused if it escapes root, so a config cannot pull in files from elsewhere."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise IngestError(f"{what} {relative} is outside the data set root {root}")
    return path


def _read_mura(root: Path, dataset: Mapping[str, Any]) -> Found:
    """MURA's train/ and valid/ trees; valid/ becomes the test split, labels come from the study folder name."""
    found = Found()
    parts = {p.upper() for p in dataset["body_parts"]}
    for split_dir, split in MURA_SPLITS.items():
        for path in walk_files(root / split_dir, root, found):
            rel = path.relative_to(root)
            if parts and len(rel.parts) > 2 and rel.parts[1].upper() not in parts:
                continue
            if len(rel.parts) != 5 or not all(map(fnmatchcase, rel.parts[1:4], MURA_LAYOUT)):
                found.reject(rel, f"not in the MURA layout {split_dir}/XR_*/patient*/study*/<image>")
                continue
            part, patient, study = rel.parts[1:4]
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                found.reject(rel, f"not an image file extension ({path.suffix})")
                continue
            match = MURA_STUDY.match(study)
            if not match:
                found.reject(rel, f"study folder '{study}' is not study<N>_<label>")
                continue
            found.rows.append(
                {
                    "path": str(rel),
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
        for path in walk_files(root, root, found):
            rel = str(path.relative_to(root))
            if looks_like_image(path):
                row = {"path": rel, "label_name": NO_LABEL, "patient_id": rel, "study_id": rel, "split": None}
                found.rows.append(row)
            else:
                found.reject(rel, f"not an image file (extension '{path.suffix}', no DICOM preamble)")
        if not found.rows:
            raise IngestError(f"{root}: no images found (unlabeled image folder)")
        return found
    tops = sorted(d for d in root.iterdir() if d.is_dir() and not _skipped(d.name))
    by_split = bool(tops) and all(d.name.lower() in FOLDER_SPLITS for d in tops)
    bases = [(d, FOLDER_SPLITS[d.name.lower()]) for d in tops] if by_split else [(root, None)]
    for base, split in bases:
        for path in walk_files(base, root, found):
            rel = path.relative_to(root)
            depth = len(path.relative_to(base).parts)
            if depth < 2:
                found.reject(rel, f"not inside a class folder of {base}")
            elif not looks_like_image(path):
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
    try:
        text = read_text(manifest)
    except ValueError as err:  # not UTF-8: the message names the byte and its line
        raise IngestError(str(err)) from None
    if not text.strip():
        raise IngestError(f"{manifest}: no rows (the file is empty)")
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise IngestError(f"{manifest}: not a valid CSV ({err})") from None
    if table.empty:
        raise IngestError(f"{manifest}: no rows (only a header: {list(table.columns)})")
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
        given = root_resolved / record["path"]
        problem = _link_problem(given, root_resolved)
        path = given.resolve() if problem is None else given
        split = record.get("split", "")
        if not Path(os.path.normpath(given)).is_relative_to(root_resolved):
            found.reject(record["path"], f"{where}: path is outside {root}")
        elif problem:
            found.reject(record["path"], f"{where}: {problem}")
        elif not record["label"]:
            found.reject(record["path"], f"{where}: empty label")
        elif split and split not in SPLITS:
            found.reject(record["path"], f"{where}: unknown split '{split}'")
        elif path.is_dir():
            _add_series(found, root_resolved, path, record, where)
        else:
            rel = str(path.relative_to(root_resolved))
            ids = _patient_and_study(found, path, rel, record, record["path"])
            if ids is None:
                continue
            row = {"path": rel, "label_name": record["label"], "patient_id": ids[0], "study_id": ids[1]}
            row |= {"split": split or None}
            found.rows.append(row | ({"source_id": record["image_id"]} if record.get("image_id") else {}))
    return found


def _add_series(found: Found, root: Path, folder: Path, record: dict, where: str) -> None:
    """Every image file of a series folder becomes a row with the folder's label, patient and study."""
    files = walk_files(folder, root, found)
    if not files:
        found.reject(folder.relative_to(root), f"{where}: folder has no files")
    for path in files:
        rel = path.relative_to(root)
        if not looks_like_image(path):
            found.reject(rel, f"{where}: not a DICOM or image file in series folder (no DICOM data set)")
            continue
        ids = _patient_and_study(found, path, str(rel), record, record["path"])
        if ids is not None:
            row = {"path": str(rel), "label_name": record["label"], "patient_id": ids[0], "study_id": ids[1]}
            found.rows.append(row | {"split": record.get("split") or None})


def _patient_and_study(found: Found, path: Path, rel: str, record: dict, fallback: str) -> tuple[str, str] | None:
    """A manifest row's patient and study: the manifest's, else the DICOM header's (PatientID, StudyInstanceUID),
    else `fallback` (the listed path: its own patient, the study being the patient). None when the DICOM header
    cannot be read; the file is then rejected with the reason."""
    patient, study = record.get("patient_id") or "", record.get("study_id") or ""
    if (not patient or not study) and path.is_file() and path.stat().st_size and is_dicom(path):
        header = _header_ids(found, path, rel)
        if header is None:
            return None
        patient, study = patient or header[0], study or header[1]
    patient = patient or fallback
    return patient, study or patient


def _header_ids(found: Found, path: Path, rel: str) -> tuple[str, str] | None:
    """(PatientID, StudyInstanceUID) of a DICOM file; its pydicom warnings are noted by count only (they quote
    header values). None, and the file rejected with the reason, when the header cannot be read."""
    with withheld_warnings() as caught:
        try:
            ids = dicom_ids(path)
        except ImageError as err:
            found.reject(rel, err.reason)
            ids = None
    if caught:
        found.note(rel, withheld_note(caught))
    return ids


def _npz_layout(keys: list[str], layout: str, file: Path) -> str:
    """The configured layout, or the one the file's keys show when the config says `auto`."""
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
    file = inside_root(root, dataset["file"], "npz file")
    rel = file.relative_to(root.resolve())
    try:
        with np.load(file, allow_pickle=False) as data:
            keys = list(data.files)
            meta = {k: data[k] for k in keys if not k.endswith("images") and k != "meta"}
    except Exception as err:
        raise IngestError(f"{file}: not a readable .npz file ({err})") from None
    layout = _npz_layout(keys, dataset["layout"], file)
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
            reason = "not a DICOM file (no DICM preamble, no DICOM data set at the start); use format csv/imagefolder"
            found.reject(row["path"], reason + " for PNG/JPEG")
            continue
        header = _header_ids(found, path, row["path"])
        if header is not None:
            patient, study = header
            found.rows.append(row | {"patient_id": patient or row["path"], "study_id": study or patient or row["path"]})
    return found


# The config's `format` -> its reader; ingest looks the reader up here and knows no format itself.
READERS: dict[str, Callable[[Path, Mapping[str, Any]], Found]] = {
    "mura": _read_mura,
    "imagefolder": _read_imagefolder,
    "csv": _read_manifest,
    "dicom": _read_dicom,
    "npz": _read_npz,
}
