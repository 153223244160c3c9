"""Turn a raw data set (MURA folders, class folders, CSV manifest, DICOM files or series, .npz arrays) into a
checked manifest and a quarantine list.

Every candidate image is opened and decoded once here, so a corrupt file is caught before training and recorded
with its reason instead of crashing a later stage. The format readers live in `medxfer.readers`, split assignment
and the leakage checks in `medxfer.splits`; this module runs them in order and writes the results.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medxfer.duplicates import near_duplicates, perceptual_hash
from medxfer.imaging import (
    ImageError,
    content_hash,
    load_image,
    npz_array,
    npz_ref,
    parse_npz_ref,
    withheld_note,
    withheld_warnings,
)
from medxfer.ingestbase import NO_LABEL, Found, IngestError
from medxfer.io import atomic_path, write_json
from medxfer.log import mark_work_start
from medxfer.privacy import path_id, private_paths, pseudonymize, salt_of, write_path_lookup
from medxfer.readers import READERS
from medxfer.sections import dataset_entry
from medxfer.splits import assign_splits, describe_leaks, drop_leaked, leaked, subsample_train

NEGATIVE_NAMES = ("normal", "negative", "no_finding", "0", "false", NO_LABEL)
MANIFEST_COLUMNS = [
    *("image_id", "path", "patient_id", "study_id", "label", "label_name", "split", "sha256", "phash"),
    *("mask", "box"),  # finding mask and box ('' without; a PNG path or an `<file>.npz#<key>[<index>]` entry)
]
LEAKS = {"patient_id": "patient(s)", "sha256": "identical image(s)", "phash": "perceptually identical image(s)"}


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
    """Rows whose image decodes as the cache will decode it, with its content hash and the perceptual hash of those
    pixels; the others are rejected with the decoder's reason (unreadable, too small, fully transparent, multi-frame,
    too large to decode safely)."""
    accepted = []
    for row in rows:
        path = root / row["path"]
        with withheld_warnings() as caught:
            try:
                image = load_image(
                    path,
                    dataset["modality"],
                    dataset["windows"],
                    dataset["size"],
                    min_side=dataset["min_image_side"],
                    assume_rescale=dataset["assume_rescale"],
                )
                accepted.append(row | {"sha256": content_hash(path), "phash": perceptual_hash(image)})
            except ImageError as err:
                found.reject(row["path"], err.reason)
        if caught:
            found.note(row["path"], withheld_note(caught))
    return accepted


def _check_class_sizes(name: str, label_names: Iterable[str], minimum: int, log: Any) -> None:
    """Log the class table; stop on a class with fewer than `minimum` images, which is most often a label typo
    (without `classes`, any new label is a new class). Each name of a multi-label set counts on its own."""
    counts = Counter(part for label in label_names for part in label.split(";"))
    table = ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))
    if log is not None:
        log.info("%s: images per class: %s", name, table)
    small = sorted(label for label, n in counts.items() if n < minimum)
    if small:
        raise IngestError(
            f"data set '{name}': class(es) {small} have fewer than min_class_size={minimum} images (a label typo? "
            f"set classes to quarantine unknown labels); images per class: {table}"
        )


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


def _npz_masks(root: Path, dataset: Mapping[str, Any], paths: pd.Series) -> tuple[list[str], list[str]]:
    """(mask, box) refs `<file>.npz#<key>[<index>]` per row from the data set's `npz_masks` file, aligned with the
    images array by index; '' for rows without a finding (not in `annotated`, or an empty mask)."""
    spec, file = dataset["npz_masks"], root / dataset["npz_masks"]["file"]
    try:
        masks = npz_array(file, spec["key"])
        n_images = len(npz_array(root / dataset["file"], "images"))
        boxes = npz_array(file, spec["box_key"]) if spec.get("box_key") else None
    except ImageError as err:
        raise IngestError(f"cannot read the finding masks: {err}") from None
    try:
        annotated = npz_array(file, "annotated").astype(bool)
    except ImageError:
        annotated = None  # optional: then every non-empty mask marks a finding
    if len(masks) != n_images:
        raise IngestError(f"{file}: '{spec['key']}' has {len(masks)} masks but the images array has {n_images} images")
    for key, array in (("box_key", boxes), ("annotated", annotated)):
        if array is not None and len(array) != len(masks):
            raise IngestError(f"{file}: '{key}' has {len(array)} entries but '{spec['key']}' has {len(masks)}")
    mask_refs, box_refs = [], []
    for path in paths:
        ref = parse_npz_ref(path)
        if ref is None or ref[1] != "images":
            raise IngestError(f"{file}: npz_masks needs the flat npz layout (one 'images' array), got row {path}")
        index = ref[2]
        found = (annotated is None or annotated[index]) and bool(masks[index].any())
        mask_refs.append(npz_ref(file, spec["key"], index) if found else "")
        box_refs.append(npz_ref(file, spec["box_key"], index) if found and boxes is not None else "")
    return mask_refs, box_refs


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
                if item[key].startswith("leakage:"):  # names the copy that was kept
                    item[key] = _scrub(item[key], pseudonyms)
        item["path"] = hidden
    if dataset.get("path_lookup"):
        write_path_lookup(dataset["path_lookup"], ((hidden, real) for real, hidden in pseudonyms.items()))
    return pseudonyms


def _scrub(text: str, pseudonyms: Mapping[str, str]) -> str:
    """`text` with every real path it quotes replaced by its pseudonym."""
    for real, hidden in pseudonyms.items():
        if real in text:
            text = text.replace(real, hidden)
    return text


def _rename_files(table: pd.DataFrame, pseudonyms: Mapping[str, str], mask_dir: Path) -> pd.DataFrame:
    """The manifest with pseudonymous paths. Masks mirror the real paths, so each is copied beside the manifest
    as masks/<pseudonym>.png (explain reads it there); cache_images finds the images again by re-listing the data
    set (medxfer.cache.image_files)."""
    shutil.rmtree(mask_dir, ignore_errors=True)  # masks of an earlier ingest
    masks = []
    for real, mask in zip(table["path"], table["mask"], strict=True):
        if mask and not parse_npz_ref(mask):
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


def _check_classes_present(name: str, classes: list[str] | None, table: pd.DataFrame) -> None:
    """A configured class without a single accepted image points at a missing or misnamed folder or label."""
    present = {part for label in table["label_name"] for part in label.split(";")}
    missing = [c for c in classes or [] if c not in present]
    if missing:
        raise IngestError(
            f"data set '{name}': configured class(es) {missing} have no accepted image (see quarantine.csv)"
        )


def _write_duplicates(path: Path, pairs: pd.DataFrame, kept: pd.Series) -> None:
    """The near-duplicate pairs whose both images are in the manifest (`kept` paths)."""
    with atomic_path(path) as tmp:
        pairs[pairs["path_a"].isin(kept) & pairs["path_b"].isin(kept)].to_csv(tmp, index=False)


def _leak_names(salt: str) -> dict[str, Callable[[str], str]]:
    """How a message names one leaked value of each LEAKS column: a patient only by its pseudonym."""
    return {
        "patient_id": lambda raw: f"patient {pseudonymize(str(raw), salt)}",
        "sha256": lambda _: "identical image",
        "phash": lambda value: f"perceptually identical image (pHash {value})",
    }


def _resolve_leakage(table: pd.DataFrame, dataset: Mapping[str, Any], found: Found) -> tuple[pd.DataFrame, str]:
    """With `leakage: drop`, each patient and picture kept in its earliest split only (the rest rejected); with
    `fail`, the table as it is and what the given splits share across splits ('' when nothing)."""
    names = _leak_names(salt_of(dataset))
    if dataset["leakage"] == "drop":
        for column in LEAKS:
            table = drop_leaked(table, found, column, names[column])
        return table, ""
    problems = []
    for column, what in LEAKS.items():
        if values := leaked(table, column):
            example = describe_leaks(table, column, names[column])
            problems.append(f"{len(values)} {what} in more than one split, e.g. {example}")
    return table, "; ".join(problems)


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


def _log_found(log: Any, name: str, found: Found, total: int, private: bool) -> None:
    """Counts, the first quarantined files and notes, and the skipped files, each once."""
    log.info("%s: %d files, %d accepted, %d quarantined", name, total, total - len(found.rejected), len(found.rejected))
    for item in found.rejected[:20]:
        log.warning("quarantined %s: %s", item["path"], item["reason"])
    for item in found.notes[:20]:
        log.warning("file %s: %s", item["path"], item["note"])
    if found.skipped:
        # base names only where paths are private: a folder may carry a patient's name
        skipped = [Path(p).name for p in found.skipped] if private else found.skipped
        shown = ", ".join(skipped[:20]) + (", ..." if len(skipped) > 20 else "")
        log.info("%s: skipped %d hidden or system files (not images): %s", name, len(skipped), shown)


def _manifest_rows(
    name: str,
    table: pd.DataFrame,
    dataset: Mapping[str, Any],
    root: Path,
    pseudonyms: Mapping[str, str],
    mask_dir: Path,
) -> pd.DataFrame:
    """The manifest as written: finding masks and boxes, pseudonymous paths where private, hashed patient and study
    ids, and image ids in manifest order."""
    if dataset.get("npz_masks"):
        table["mask"], table["box"] = _npz_masks(root, dataset, table["path"])
    else:
        table["mask"], table["box"] = [_mask_for(dataset.get("masks"), p) for p in table["path"]], ""
    if pseudonyms:
        table = _rename_files(table, pseudonyms, mask_dir)
    salt = salt_of(dataset)
    table["patient_id"] = table["patient_id"].map(lambda raw: pseudonymize(str(raw), salt))
    table["study_id"] = table["study_id"].map(lambda raw: pseudonymize(str(raw), salt))
    table["image_id"] = [f"{name}-{i:06d}" for i in range(len(table))]
    return table[MANIFEST_COLUMNS]


def ingest_dataset(
    name: str,
    dataset: Mapping[str, Any],
    manifest_path: Path,
    quarantine_path: Path,
    seed: int = 0,
    log: Any = None,
    duplicates_path: Path | None = None,
) -> pd.DataFrame:
    """Read, check and split one data set; write manifest.csv, quarantine.csv and duplicates.csv (default: beside
    the manifest) atomically. `dataset`: its config entry; keys it leaves out take the schema's defaults.

    The previous run's files go first: a failed or killed run must not leave a manifest that looks current."""
    duplicates_path = duplicates_path or manifest_path.with_name("duplicates.csv")
    for previous in (manifest_path, quarantine_path, duplicates_path):
        Path(previous).unlink(missing_ok=True)
    dataset = dataset_entry(dataset, name)
    root = Path(dataset["root"])
    if not root.is_dir():
        raise IngestError(f"data set '{name}': root folder {root} does not exist")
    mark_work_start()
    found = READERS[dataset["format"]](root, dataset)
    rows = _drop_duplicates(found, _check_labels(found, dataset.get("classes")))
    accepted = _decode_all(root, rows, dataset, found)
    table = _label_and_split(accepted, dataset.get("classes") or found.classes, dataset, seed) if accepted else None
    table, leaks = _resolve_leakage(table, dataset, found) if table is not None else (None, "")
    total = (0 if table is None else len(table)) + len(found.rejected)
    pseudonyms = _hide_paths(root, dataset, table, found)  # before anything is written or logged
    _write_quarantine(quarantine_path, found.rejected)
    if log is not None:
        _log_found(log, name, found, total, private=bool(pseudonyms))
    _check_rejections(name, dataset, len(found.rejected), total, found)
    _check_classes_present(name, dataset.get("classes"), table)
    _check_class_sizes(name, table["label_name"], dataset["min_class_size"], log)
    pairs = near_duplicates(table, dataset["near_duplicate_distance"])
    if pseudonyms:
        pairs = pairs.assign(path_a=pairs["path_a"].map(pseudonyms), path_b=pairs["path_b"].map(pseudonyms))
    if leaks:
        _write_duplicates(duplicates_path, pairs, table["path"].map(lambda p: pseudonyms.get(p, p)))
        leaks = _scrub(leaks, pseudonyms)
        raise IngestError(
            f"data set '{name}': {leaks} (the given splits overlap; see {duplicates_path.name}; set leakage: drop "
            "to keep each in its earliest split and quarantine the rest)"
        )
    n_train = int((table["split"] == "train").sum())
    table = subsample_train(table, dataset["train_fraction"], seed)
    if log is not None and dataset["train_fraction"] < 1:
        kept = int((table["split"] == "train").sum())
        fraction = dataset["train_fraction"]
        log.info("%s: train_fraction %.3g keeps %d of %d training images", name, fraction, kept, n_train)
    table = _manifest_rows(name, table, dataset, root, pseudonyms, manifest_path.parent / "masks")
    with atomic_path(manifest_path) as tmp:
        table.to_csv(tmp, index=False)
    _write_duplicates(duplicates_path, pairs, table["path"])
    if log is not None and len(pairs):
        log.warning("%s: %d near-duplicate pair(s) across splits, see %s", name, len(pairs), duplicates_path)
    if log is not None:
        counts = table.groupby(["split", "label_name"]).size().to_dict()
        log.info("%s: classes %s; split x class counts %s", name, classes_of(table), counts)
    return table


PRETRAIN_SPLITS = ("train", "val")  # what pretraining reads of a source: it trains on train, picks its epoch on val


def check_source_overlap(
    target_manifest: Path, source_manifests: Mapping[str, Path], out: Path, near_distance: int = 4
) -> dict:
    """Target test images that are copies of an image pretraining reads (a source's train and val splits): the same
    content hash, or the same perceptual hash (a resized or re-encoded copy: the same picture in another file of
    another size). A model pretrained on them has seen the test set, so the in-domain comparison would flatter it.
    A source's own test split is only scored, never learned from, so the target's own data set under the same split
    passes (self-supervised pretraining on its unlabelled training images). Pairs up to `near_distance` bits apart
    are listed for review only: X-rays of different patients can be that close. Writes the finding to `out`, then
    fails if any test image is a copy."""
    target = read_manifest(target_manifest)
    _require_phash(target, target_manifest)
    test = target[target["split"] == "test"]
    report: dict[str, Any] = {
        "target": str(target_manifest),
        "n_test": len(test),
        "method": "sha256 of the file bytes (or of the raw array of an .npz entry), and the 64-bit pHash of the "
        "decoded pixels: equal hashes are copies; pHashes up to near_distance bits apart are listed for review",
        "near_distance": near_distance,
        "source_splits": list(PRETRAIN_SPLITS),
        "overlap": {},
    }
    for name, manifest in source_manifests.items():
        source = read_manifest(manifest)
        _require_phash(source, manifest)
        read = source[source["split"].isin(PRETRAIN_SPLITS)]
        exact = test["sha256"].isin(set(read["sha256"]))
        perceptual = ~exact & test["phash"].isin(set(read["phash"]))
        copies = sorted(test.loc[exact | perceptual, "path"])
        near = _near_pairs(test[~(exact | perceptual)], read, near_distance)
        report["overlap"][name] = {
            "count": len(copies),
            "exact": int(exact.sum()),
            "perceptual": int(perceptual.sum()),
            "examples": copies[:5],
            "near": len({pair["test"] for pair in near}),  # images: one may be near several
            "near_examples": near[:5],
        }
    write_json(out, report)
    overlapping = {name: part for name, part in report["overlap"].items() if part["count"]}
    if overlapping:
        detail = "; ".join(
            f"{n}: {p['count']} (e.g. {p['examples'][0]}; {p['exact']} exact, {p['perceptual']} resized or re-encoded)"
            for n, p in overlapping.items()
        )
        raise IngestError(f"{target_manifest}: test images also in a pretraining source ({detail}); see {out}")
    return report


def _require_phash(manifest: pd.DataFrame, path: Path) -> None:
    if "phash" not in manifest:
        raise IngestError(
            f"{path}: no phash column (written by an older medxfer); run its ingest again "
            "(snakemake --forcerun ingest_dataset) so copies in other sizes or encodings can be found"
        )


def _near_pairs(test: pd.DataFrame, source: pd.DataFrame, max_distance: int) -> list[dict[str, Any]]:
    """Test images within `max_distance` bits of a source image (not equal: those are copies), closest first."""
    if not max_distance or test.empty or source.empty:
        return []
    both = pd.concat([test.assign(split="val"), source.assign(split="train")], ignore_index=True)
    pairs = near_duplicates(both, max_distance)  # train = source, val = target test: only pairs across the two
    return [
        {"test": row.path_b, "source": row.path_a, "distance": int(row.distance)}
        for row in pairs.itertuples()
        if row.distance > 0
    ]


def read_manifest(path: Path) -> pd.DataFrame:
    """A manifest.csv with id and hash columns kept as text, so ids such as '007' or 'NA', and a pHash of digits
    only ('0012...', '1e40...'), come back as written."""
    text = {"image_id": str, "patient_id": str, "study_id": str, "sha256": str, "phash": str, "mask": str, "box": str}
    return pd.read_csv(path, dtype=text, keep_default_na=False)


def classes_of(manifest: pd.DataFrame) -> list[str]:
    """Class names in label order, taken from the manifest itself so every stage agrees with ingest."""
    pairs = manifest[["label", "label_name"]].drop_duplicates().sort_values("label")
    return pairs["label_name"].tolist()
