"""Turn a raw data set (MURA folders, class folders, CSV manifest, DICOM files or series, .npz arrays) into a
checked manifest and a quarantine list.

Every candidate image is opened and decoded once here, so a corrupt file is caught before training and recorded
with its reason instead of crashing a later stage. The format readers live in `medxfer.readers`, split assignment
and the leakage checks in `medxfer.splits`; this module runs them in order and writes the results.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medxfer.imaging import ImageError, content_hash, parse_npz_ref, read_image, withheld_note, withheld_warnings
from medxfer.ingestbase import NO_LABEL, Found, IngestError
from medxfer.io import atomic_path, write_json
from medxfer.privacy import path_id, private_paths, pseudonymize, salt_of, write_path_lookup
from medxfer.readers import READERS
from medxfer.splits import assign_splits, check_leakage, drop_leaked, subsample_train

NEGATIVE_NAMES = ("normal", "negative", "no_finding", "0", "false", NO_LABEL)
MANIFEST_COLUMNS = ["image_id", "path", "patient_id", "study_id", "label", "label_name", "split", "sha256", "mask"]


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
        with withheld_warnings() as caught:
            try:
                read_image(path, dataset["modality"], windows, dataset.get("assume_rescale"))
                accepted.append(row | {"sha256": content_hash(path)})
            except ImageError as err:
                found.reject(row["path"], err.reason)
        if caught:
            found.note(row["path"], withheld_note(caught))
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


def _mask_for(masks: str | None, path: str) -> str:
    """The segmentation mask `<masks>/<path>.png` if it exists, else ''; npz entries have no mask files."""
    if not masks or parse_npz_ref(path):
        return ""
    mask = Path(masks) / Path(path).with_suffix(".png")
    return str(mask) if mask.is_file() else ""


def _label_and_split(
    rows: list[dict], classes: list[str] | None, dataset: Mapping[str, Any], seed: int
) -> pd.DataFrame:
    """Integer labels in manifest class order, then splits: stratifying needs the integer labels first."""
    table = pd.DataFrame(rows)
    order = label_order(table["label_name"].tolist(), classes)
    table["label"] = table["label_name"].map({c: i for i, c in enumerate(order)}).astype(int)
    table["split"] = assign_splits(table, dataset["val_fraction"], dataset["test_fraction"], seed)
    return table


def _hide_paths(root: Path, dataset: Mapping[str, Any], table: pd.DataFrame | None, found: Found) -> dict[str, str]:
    """{real path: pseudonym} of every file ingest names (accepted and rejected) when the data set's paths are
    pseudonymous, else {}. Renames the rejected files and notes in place, scrubbing the real path from reasons
    (a decoder's message may quote it), and writes the user's private `path_lookup` if one is configured."""
    if not private_paths(dataset):
        return {}
    salt = salt_of(dataset)
    names = (list(table["path"]) if table is not None else []) + [r["path"] for r in found.rejected + found.notes]
    pseudonyms = {name: path_id(name, salt) for name in names}
    for item in found.rejected + found.notes:
        real, hidden = item["path"], pseudonyms[item["path"]]
        for key in ("reason", "note"):
            if key in item:
                for spelling in (str((root / real).resolve()), str(root / real)):
                    item[key] = item[key].replace(spelling, hidden)
        item["path"] = hidden
    if dataset.get("path_lookup"):
        write_path_lookup(dataset["path_lookup"], ((hidden, real) for real, hidden in pseudonyms.items()))
    return pseudonyms


def _rename_files(table: pd.DataFrame, pseudonyms: Mapping[str, str], mask_dir: Path) -> pd.DataFrame:
    """The manifest with pseudonymous paths. Masks mirror the real paths, so each is copied beside the manifest
    as masks/<pseudonym>.png (explain reads it there); cache_images finds the images again by re-listing the data
    set (medxfer.cache.image_files)."""
    shutil.rmtree(mask_dir, ignore_errors=True)  # masks of an earlier ingest
    masks = []
    for real, mask in zip(table["path"], table["mask"], strict=True):
        if mask:
            copy = mask_dir / f"{pseudonyms[real]}.png"
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mask, copy)
            mask = str(copy)
        masks.append(mask)
    return table.assign(path=table["path"].map(pseudonyms), mask=masks)


def _write_quarantine(path: Path, rejected: list[dict]) -> None:
    """Written before the rejection checks, so a failed ingest still leaves the list that explains it."""
    with atomic_path(path) as tmp:
        pd.DataFrame(rejected, columns=["path", "reason"]).to_csv(tmp, index=False)


def _check_rejections(name: str, dataset: Mapping[str, Any], n_rejected: int, total: int, found: Found) -> None:
    """Stop when too much was quarantined: a mostly unreadable data set points at a wrong config, not bad files."""
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
    pseudonyms = _hide_paths(root, dataset, table, found)  # before anything is written or logged
    _write_quarantine(quarantine_path, found.rejected)
    if log is not None:
        log.info(
            "%s: %d files, %d accepted, %d quarantined", name, total, total - len(found.rejected), len(found.rejected)
        )
        for item in found.rejected[:20]:
            log.warning("quarantined %s: %s", item["path"], item["reason"])
        for item in found.notes[:20]:
            log.warning("file %s: %s", item["path"], item["note"])
    _check_rejections(name, dataset, len(found.rejected), total, found)
    if leaked:
        paths = [pseudonyms.get(p, p) for p in table.loc[table["sha256"].isin(leaked[:3]), "path"]]
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
    if pseudonyms:
        table = _rename_files(table, pseudonyms, manifest_path.parent / "masks")
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
    """A manifest.csv with id columns kept as text, so ids such as '007' or 'NA' come back as written."""
    return pd.read_csv(
        path, dtype={"image_id": str, "patient_id": str, "study_id": str, "mask": str}, keep_default_na=False
    )


def classes_of(manifest: pd.DataFrame) -> list[str]:
    """Class names in label order, taken from the manifest itself so every stage agrees with ingest."""
    pairs = manifest[["label", "label_name"]].drop_duplicates().sort_values("label")
    return pairs["label_name"].tolist()
