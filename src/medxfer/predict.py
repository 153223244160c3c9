"""Run a bundle on new studies: a folder (PNG, JPEG, DICOM, any nesting), a CSV manifest, or one file.

Files are found and decoded as ingest does (medxfer.readers' walk, medxfer.imaging.load_image with the bundle's
preprocessing); a file that cannot be read is quarantined with its reason and the others are predicted. An input
that does not fit the bundle (another modality, another channel count) stops the run before anything is written.
Nothing that could identify a patient is written: where the input holds DICOM files, every file is named by a salted
hash of its path (a PACS export names folders after patients); studies and patients always by salted hashes of their
ids (medxfer.privacy), as ingest names them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medxfer.imaging import ImageError, dicom_ids, dicom_modality, is_dicom, load_image, withheld_warnings
from medxfer.ingestbase import Found, printable
from medxfer.io import atomic_path, sha256_file, write_json
from medxfer.privacy import path_id, pseudonymize, salt_of
from medxfer.readers import inside_root, looks_like_image, walk_files

OUTPUTS = {
    "images": "predictions.csv",
    "studies": "studies.csv",
    "quarantine": "quarantine.csv",
    "record": "predict.json",
}
HEATMAP_DIR = "heatmaps"
# DICOM Modality values of each bundle modality; a file whose header names another modality does not fit
DICOM_MODALITIES = {"ct": {"CT"}, "xray": {"CR", "DX", "DR", "RG", "RF", "XA", "MG", "OT", ""}}


class InputMismatchError(ValueError):
    """The input as a whole does not fit the bundle: predicting would run the model on the wrong kind of image."""


def find_inputs(source: str | os.PathLike, found: Found) -> tuple[Path, list[dict[str, Any]]]:
    """The base folder and one row per candidate file (`rel`: its path under the base, `study`/`patient`: ids a
    manifest gives). A folder is walked as ingest walks a data set; a CSV needs a `path` column (relative to the
    CSV's folder, or absolute) and may give `study_id` and `patient_id`."""
    source = Path(source)
    if source.is_dir():
        rows = []
        for file in walk_files(source, source, found):
            rel = file.relative_to(source)
            if looks_like_image(file):
                rows.append({"rel": rel})
            else:
                found.reject(rel, "not an image: no image extension and no DICOM preamble")
        return source, rows
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if source.suffix.lower() != ".csv":
        return source.parent, [{"rel": Path(source.name)}]
    table = pd.read_csv(source, dtype=str, keep_default_na=False)
    if "path" not in table:
        raise ValueError(f"{source}: a prediction manifest needs a 'path' column, got {list(table.columns)}")
    base = source.parent
    rows = []
    for record in table.to_dict("records"):
        file = Path(record["path"])  # absolute, or under the CSV's folder
        rel = file if file.is_absolute() else inside_root(base, file, "manifest path").relative_to(base.resolve())
        row: dict[str, Any] = {"rel": rel}
        row |= {k: record[f"{k}_id"] for k in ("study", "patient") if record.get(f"{k}_id")}
        rows.append(row)
    return base, rows


def _fit_problem(file: Path, image: np.ndarray, pre: Mapping[str, Any]) -> str | None:
    """Why a decoded file does not fit the bundle's input, or None."""
    if is_dicom(file):
        modality = dicom_modality(file)
        if modality not in DICOM_MODALITIES[pre["modality"]]:
            return f"DICOM Modality {modality}, the bundle reads {pre['modality']} images"
    if image.shape[0] != pre["channels"]:
        need = "CT in Hounsfield units (DICOM), one channel per window" if pre["modality"] == "ct" else "grey"
        return f"{image.shape[0]} channel(s) after decoding, the bundle needs {pre['channels']} ({need})"
    return None


def _ids(base: Path, row: Mapping[str, Any], salt: str, private: bool) -> dict[str, str]:
    """The names a row is written under: path (hashed when `private`), study and patient (always hashed)."""
    file = base / row["rel"]
    rel = Path(row["rel"]).as_posix()
    patient, study = dicom_ids(file) if is_dicom(file) else ("", "")
    if not study:  # a raster's study is its folder (MURA's layout), or the image itself at the input's top
        folder = Path(row["rel"]).parent
        study = folder.as_posix() if folder != Path(".") else rel
    study, patient = row.get("study") or study, row.get("patient") or patient
    return {
        "image_id": path_id(rel, salt),
        "path": path_id(rel, salt) if private else rel,
        "study_id": pseudonymize(study, salt),
        "patient_id": pseudonymize(patient, salt) if patient else "",
    }


def decode_inputs(
    base: Path, rows: list[dict[str, Any]], pre: Mapping[str, Any], found: Found, salt: str, private: bool
) -> tuple[pd.DataFrame, np.ndarray]:
    """The decoded images (N, C, size, size) and their ids; unreadable files go to `found.rejected`, a file that
    does not fit the bundle raises InputMismatchError naming it (by its hashed path when `private`)."""
    kept, images, misfits = [], [], []
    for row in rows:
        file = base / row["rel"]
        with withheld_warnings():
            try:
                image = load_image(
                    file,
                    pre["modality"],
                    pre["windows"] or (),  # None for radiographs, which have no windows
                    pre["size"],
                    min_side=pre["min_image_side"],
                    assume_rescale=pre["assume_rescale"],
                )
            except ImageError as err:
                found.reject(row["rel"], err.reason)
                continue
        problem = _fit_problem(file, image, pre)
        if problem:
            misfits.append(f"{path_id(row['rel'], salt) if private else printable(file)}: {problem}")
            continue
        kept.append(_ids(base, row, salt, private))
        images.append(image)
    if misfits:
        shown = "; ".join(misfits[:5]) + (f"; and {len(misfits) - 5} more" if len(misfits) > 5 else "")
        hashed = " (paths hashed: the input holds DICOM)" if private else ""
        raise InputMismatchError(f"{len(misfits)} input file(s) do not fit the bundle{hashed}: {shown}")
    shape = (0, pre["channels"], pre["size"], pre["size"])
    return pd.DataFrame(kept, columns=["image_id", "path", "study_id", "patient_id"]), (
        np.stack(images) if images else np.zeros(shape, np.uint8)
    )


def _probability_columns(prefix: str, classes: list[str], proba: np.ndarray) -> dict[str, np.ndarray]:
    return {f"{prefix}{name}": proba[:, k] for k, name in enumerate(classes)}


def predict(
    bundle: str | os.PathLike | Any,
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    heatmaps: int = 0,
    salt: str | None = None,
    device: str = "auto",
    threads: int = 1,
    batch_size: int = 256,
    runtime: str = "torch",
) -> dict[str, Any]:
    """Write predictions.csv (per image: ids, prob_<class>, calibrated_<class> where the bundle has a temperature,
    decision), studies.csv (mean probability per study, as the report aggregates), quarantine.csv and
    predict.json; with `heatmaps`, Grad-CAM overlays of the first N images under heatmaps/. `bundle`: a bundle
    folder, or one loaded already (medxfer.bundle.load)."""
    from medxfer import bundle as bundles

    out_dir = Path(out_dir)
    model = bundle if isinstance(bundle, bundles.Bundle) else bundles.load(bundle, device, threads, runtime)
    salt = salt if salt is not None else salt_of({})
    found = Found()
    base, rows = find_inputs(source, found)
    private = any(is_dicom(base / row["rel"]) for row in rows)  # a PACS export names folders after patients
    table, images = decode_inputs(base, rows, model.preprocessing, found, salt, private)
    scores = model.predict_proba(images, batch_size)
    decisions = model.decide(scores["proba"]) if len(table) else np.zeros(0, np.int64)
    classes = model.classes
    table = table.assign(
        **_probability_columns("prob_", classes, scores["proba"]),
        **_probability_columns("calibrated_", classes, scores["calibrated"]) if "calibrated" in scores else {},
        decision=[classes[k] for k in decisions],
    )
    studies = _study_table(table, classes, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in (("images", table), ("studies", studies)):
        with atomic_path(out_dir / OUTPUTS[name]) as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_path(out_dir / OUTPUTS["quarantine"]) as tmp:
        rejected = pd.DataFrame(found.rejected, columns=["path", "reason"])
        if private:
            rejected["path"] = [path_id(p, salt) for p in rejected["path"]]
        rejected.to_csv(tmp, index=False)
    if heatmaps:
        _write_heatmaps(model, images[:heatmaps], table.iloc[:heatmaps], decisions[:heatmaps], out_dir / HEATMAP_DIR)
    record = {
        "bundle": {"identity": model.meta["identity"], "sha256": sha256_file(model.path / bundles.META_FILE)},
        "decision": model.meta["decision"],
        "runtime": model.runtime,
        "predicted": len(table),
        "quarantined": len(found.rejected),
        "studies": len(studies),
        "heatmaps": int(min(heatmaps, len(table))),
    }
    write_json(out_dir / OUTPUTS["record"], record)
    return record


def _study_table(table: pd.DataFrame, classes: list[str], model: Any) -> pd.DataFrame:
    """Per study: the number of images, the mean probability of each class, and the decision on those means."""
    columns = [f"prob_{c}" for c in classes]
    if table.empty:
        return pd.DataFrame(columns=["study_id", "images", *columns, "decision"])
    grouped = table.groupby("study_id", sort=True)
    studies = grouped[columns].mean().reset_index()
    studies.insert(1, "images", grouped.size().to_numpy())
    studies["decision"] = [classes[k] for k in model.decide(studies[columns].to_numpy(np.float64))]
    return studies


def _write_heatmaps(model: Any, images: np.ndarray, rows: pd.DataFrame, decided: np.ndarray, folder: Path) -> None:
    """Grad-CAM of the bundle's (first) CNN toward the decided class, beside each image, one PNG per image."""
    from medxfer.cams import heatmaps
    from medxfer.explain import annotated, save_png

    maps = heatmaps("gradcam", model.torch_cnn(0), images, [int(k) for k in decided])
    folder.mkdir(parents=True, exist_ok=True)
    for image, heat, row, k in zip(images, maps, rows.itertuples(), decided, strict=True):
        save_png(folder / f"{row.image_id}.png", annotated(image, heat, f"{model.classes[k]} (Grad-CAM)"))


__all__ = ["InputMismatchError", "decode_inputs", "find_inputs", "predict"]
