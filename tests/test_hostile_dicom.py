"""Hostile DICOM input: CT without rescale tags, manifests without patients, values that leak through warnings or
folder names, files without the 128-byte preamble. Every file is written here with pydicom."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medxfer.cache import cache_images, image_files, load_cached
from medxfer.config import ConfigError, validate
from medxfer.fingerprint import dataset_fingerprint
from medxfer.imaging import ImageError, read_image
from medxfer.ingest import ingest_dataset, pseudonymize
from medxfer.log import get_logger
from medxfer.privacy import path_id, private_paths

SECRET_UID = "1.2.840.PID-SECRET-123.DOE^JOHN"


def ct_dataset(hu: np.ndarray, patient: str = "P1", study: str | None = None, rescale: bool = True) -> Dataset:
    """A CT slice storing HU + 1024 as uint16, as scanners do; without `rescale` the tags that say so are absent."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID = "Doe^John", patient
    ds.StudyInstanceUID = study or generate_uid()
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
    return ds


def write(path: Path, ds: Dataset) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def slice_hu(seed: int, size: int = 16) -> np.ndarray:
    """Air around a body of soft tissue with some bone: a spread of HU the windows can tell apart."""
    rng = np.random.default_rng(seed)
    hu = np.full((size, size), -1000.0)
    hu[3:-3, 3:-3] = rng.normal(40, 30, (size - 6, size - 6)).round()
    hu[6:9, 6:9] = 700
    return hu


def entry(root: Path, results: str = "results", **fields) -> dict:
    conf = {"datasets": {"d": {"root": str(root)} | fields}, "finetune": {"targets": ["d"], "inits": ["scratch"]}}
    return validate(conf | {"results": results})["datasets"]["d"]


def ingest(out: Path, ds: dict, log: logging.Logger | None = None) -> pd.DataFrame:
    return ingest_dataset("d", ds, out / "manifest.csv", out / "quarantine.csv", seed=0, log=log)


def quarantine(out: Path) -> dict[str, str]:
    table = pd.read_csv(out / "quarantine.csv")
    return dict(zip(table["path"], table["reason"], strict=True))


# 1. CT without RescaleSlope/RescaleIntercept


def test_ct_without_rescale_is_refused_unless_the_data_set_says_what_to_assume(tmp_path):
    hu = slice_hu(0)
    tagged = write(tmp_path / "tagged.dcm", ct_dataset(hu))
    bare = write(tmp_path / "bare.dcm", ct_dataset(hu, rescale=False))
    windows = [[40, 400]]
    with pytest.raises(ImageError, match=r"bare\.dcm: CT image without RescaleSlope/RescaleIntercept.*assume_rescale"):
        read_image(bare, "ct", windows)
    assumed = read_image(bare, "ct", windows, {"slope": 1, "intercept": -1024})
    assert np.array_equal(assumed, read_image(tagged, "ct", windows))
    # what main did: stored values taken as HU, the whole body 1024 HU too bright
    assert read_image(bare, "ct", windows, {"slope": 1, "intercept": 0}).mean() > assumed.mean() + 50
    assert np.array_equal(read_image(bare, "xray"), read_image(tagged, "xray"))  # radiographs are scaled min..max


def test_missing_rescale_is_quarantined_with_its_reason_and_assume_rescale_keeps_it(tmp_path):
    root = tmp_path / "raw"
    for i in range(6):
        write(root / "normal" / f"s{i}", ct_dataset(slice_hu(i), patient=f"P{i}"))
    write(root / "normal" / "bare", ct_dataset(slice_hu(9), patient="P9", rescale=False))
    fields = {"format": "dicom", "modality": "ct", "max_reject_fraction": 0.5, "pseudonymous_paths": False}
    ingest(tmp_path / "o1", entry(root, **fields))
    assert "without RescaleSlope/RescaleIntercept" in quarantine(tmp_path / "o1")["normal/bare"]
    assert entry(root, **fields)["assume_rescale"] is None  # the default assumes nothing
    kept = ingest(tmp_path / "o2", entry(root, **fields, assume_rescale={"slope": 1, "intercept": -1024}))
    assert "normal/bare" in set(kept["path"]) and not quarantine(tmp_path / "o2")
    with pytest.raises(ConfigError, match="assume_rescale"):
        entry(root, **fields, assume_rescale={"slope": 1})


# 2. Patient and study from the header when the manifest has none


def test_manifest_without_patient_column_takes_patient_and_study_from_the_header(tmp_path):
    root = tmp_path / "raw"
    files, labels = [], []
    for p in range(8):  # 8 patients x 3 slices, one study each
        study = generate_uid()
        for k in range(3):
            write(root / f"img{p}_{k}.dcm", ct_dataset(slice_hu(10 * p + k), patient=f"TCGA-{p:02d}", study=study))
            files.append(f"img{p}_{k}.dcm")
            labels.append(str(p % 2))
    pd.DataFrame({"file": files, "contrast": labels}).to_csv(root / "labels.csv", index=False)
    fields = {"format": "dicom", "manifest": str(root / "labels.csv"), "modality": "ct"}
    fields |= {"columns": {"path": "file", "label": "contrast"}, "privacy": {"salt": "s"}}
    table = ingest(tmp_path / "out", entry(root, **fields))
    assert table["patient_id"].nunique() == 8 and table["study_id"].nunique() == 8
    assert set(table["patient_id"]) == {pseudonymize(f"TCGA-{p:02d}", "s") for p in range(8)}
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    assert "TCGA-" not in (tmp_path / "out" / "manifest.csv").read_text()


# 14. pydicom warnings quote header values


def test_malformed_uid_holding_a_name_never_reaches_stderr_or_logs(tmp_path, capfd, caplog):
    root = tmp_path / "raw"
    for i in range(4):
        ds = ct_dataset(slice_hu(i), patient=f"P{i}")
        if i == 0:
            with pytest.warns(UserWarning, match="Invalid value for VR UI"):
                ds.StudyInstanceUID = SECRET_UID
        write(root / "normal" / f"s{i}.dcm", ds)
    log_file = tmp_path / "ingest.log"
    ds = entry(root, format="dicom", modality="ct", pseudonymous_paths=False)
    caplog.set_level(logging.DEBUG)
    capfd.readouterr(), caplog.clear()  # only what ingest and the cache print counts
    ingest(tmp_path / "out", ds, get_logger("medxfer.ingest.test", log_file))
    cache_images(ds, tmp_path / "out" / "manifest.csv", tmp_path / "out" / "images.npy", threads=2)
    captured = capfd.readouterr()
    written = captured.out + captured.err + caplog.text + log_file.read_text()
    assert "SECRET" not in written and "DOE^JOHN" not in written
    assert "file normal/s0.dcm: 1 pydicom warning(s) of kind UserWarning while parsing; values withheld" in written
    with pytest.warns(UserWarning, match="DOE"):  # the value is really there, and pydicom quotes it
        assert pydicom.dcmread(root / "normal" / "s0.dcm").StudyInstanceUID == SECRET_UID


# 15. Folder names that identify patients


def pacs_export(root: Path) -> None:
    """A PACS export: one folder per patient name, a file that cannot be read, a mask per image."""
    for p, name in enumerate(["DOE^JOHN", "ROE^JANE", "POE^EDGAR", "LOE^ANNA", "MOE^MAX", "NOE^NINA"]):
        label = "lesion" if p % 2 else "normal"
        for k in range(2):
            rel = Path(label) / name / f"IM{k}"
            write(root / "images" / rel, ct_dataset(slice_hu(10 * p + k), patient=f"P{p}"))
            mask = (np.arange(256).reshape(16, 16) % (p + 2) == 0).astype(np.uint8) * 255
            (root / "masks" / rel.parent).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "masks" / rel.with_suffix(".png"))
    (root / "images" / "normal" / "DOE^JOHN" / "IM9.dcm").write_bytes(b"broken")


def test_identifying_folder_names_stay_out_of_results_and_the_fingerprint_sidecar(tmp_path):
    raw, results, private = tmp_path / "raw", tmp_path / "results", tmp_path / "private"
    pacs_export(raw)
    lookup = private / "paths.csv"
    fields = {"format": "dicom", "modality": "ct", "masks": str(raw / "masks"), "max_reject_fraction": 0.2, "size": 16}
    ds = entry(raw / "images", str(results), **fields, path_lookup=str(lookup))
    out = results / "datasets" / "d"
    log_file = results / "logs" / "ingest.log"
    table = ingest(out, ds, get_logger("medxfer.ingest.pacs", log_file))
    cache_images(ds, out / "manifest.csv", out / "images_16.npy")
    sidecar = tmp_path / "side"
    dataset_fingerprint("d", ds, sidecar)
    everything = "".join(p.read_text() for p in results.rglob("*") if p.suffix in (".csv", ".log"))
    everything += "".join(p.name for p in results.rglob("*")) + (sidecar / "d.json").read_text()
    for name in ("DOE", "ROE", "POE", "LOE", "MOE", "NOE", "IM0", "IM9"):
        assert name not in everything, name
    assert table["path"].str.fullmatch(r"file-[0-9a-f]{16}").all()
    # the way back exists only where the user asked for it, and the cache found every image without it
    real = dict(pd.read_csv(lookup).to_numpy())
    assert real[path_id("normal/DOE^JOHN/IM9.dcm", "medxfer-default-salt")] == "normal/DOE^JOHN/IM9.dcm"
    assert set(quarantine(out)) == {path_id("normal/DOE^JOHN/IM9.dcm", "medxfer-default-salt")}
    cached = np.load(out / "images_16.npy")
    first = raw / "images" / real[table.loc[0, "path"]]
    assert np.array_equal(cached[0], read_image(first, "ct", ds["windows"]))
    # masks are copied beside the manifest under the pseudonym, and the splits still read them
    masks = load_cached(out / "manifest.csv", out / "images_16.npy").splits["train"].masks
    assert len(masks) and all(Path(m).is_file() and Path(m).parent == out / "masks" for m in masks)
    assert json.loads((sidecar / "d.json").read_text())  # the sidecar still caches, by hashed key
    first.write_bytes(first.read_bytes()[:300])  # truncated after ingest: the cache's error names the pseudonym
    with pytest.raises(ImageError) as failure:
        cache_images(ds, out / "manifest.csv", out / "again.npy")
    assert table.loc[0, "path"] in str(failure.value) and "^" not in str(failure.value)


def test_path_lookup_is_refused_inside_results_and_paths_resolve_only_with_the_same_salt(tmp_path):
    raw = tmp_path / "raw"
    for i in range(4):
        write(raw / "normal" / f"s{i}.dcm", ct_dataset(slice_hu(i), patient=f"P{i}"))
    with pytest.raises(ConfigError, match=r"path_lookup.*inside results"):
        entry(raw, str(tmp_path / "results"), format="dicom", path_lookup=str(tmp_path / "results" / "paths.csv"))
    with pytest.raises(ConfigError, match=r"path_lookup.*not pseudonymous"):
        entry(raw, format="dicom", pseudonymous_paths=False, path_lookup=str(tmp_path / "paths.csv"))
    ds = entry(raw, format="dicom", modality="ct", privacy={"salt": "one"})
    table = ingest(tmp_path / "out", ds)
    assert image_files(ds, list(table["path"]))[0].parent == raw / "normal"
    with pytest.raises(FileNotFoundError, match="another privacy salt"):
        image_files(ds | {"privacy": {"salt": "two"}}, list(table["path"]))


def test_any_format_can_ask_for_pseudonymous_paths(tmp_path):
    root = tmp_path / "raw"
    for i, name in enumerate(["DOE^JOHN", "ROE^JANE", "POE^EDGAR", "LOE^ANNA"]):
        (root / "normal" / name).mkdir(parents=True)
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(root / "normal" / name / "a.png")
    ds = entry(root, format="imagefolder", pseudonymous_paths=True)
    assert not private_paths(entry(root, format="imagefolder"))  # auto: off outside DICOM
    table = ingest(tmp_path / "out", ds)
    assert "DOE" not in (tmp_path / "out" / "manifest.csv").read_text()
    cache_images(ds | {"size": 16}, tmp_path / "out" / "manifest.csv", tmp_path / "out" / "images.npy")
    assert len(np.load(tmp_path / "out" / "images.npy")) == len(table) == 4


# 18. DICOM without the 128-byte preamble


def bare_dataset_bytes(ds: Dataset) -> bytes:
    """A data set as some archives store it: no preamble, no DICM, no file meta (implicit VR little endian)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    return fp.getvalue()


def test_dicom_without_preamble_is_read_or_quarantined_with_the_real_reason(tmp_path):
    root = tmp_path / "raw"
    hu = slice_hu(3)
    reference = write(tmp_path / "reference.dcm", ct_dataset(hu, patient="P0"))
    for i in range(4):
        write(root / "normal" / f"ok{i}", ct_dataset(slice_hu(i), patient=f"P{i + 1}"))
    data = reference.read_bytes()
    (root / "normal" / "meta_no_preamble").write_bytes(data[132:])  # file meta kept, preamble and DICM cut
    (root / "normal" / "bare").write_bytes(bare_dataset_bytes(ct_dataset(hu, patient="P0")))
    no_pixels = ct_dataset(hu, patient="P7")
    del no_pixels.PixelData
    (root / "normal" / "bare_no_pixels").write_bytes(bare_dataset_bytes(no_pixels))
    (root / "normal" / "junk").write_bytes(b"\x08\x00\x05\x00CS\x0a\x00" + bytes(range(256)) * 4)
    windows = [[40, 400]]
    expected = read_image(reference, "ct", windows)
    for name in ("meta_no_preamble", "bare"):
        assert np.array_equal(read_image(root / "normal" / name, "ct", windows), expected), name
    fields = {"format": "dicom", "modality": "ct", "max_reject_fraction": 0.5, "pseudonymous_paths": False}
    table = ingest(tmp_path / "out", entry(root, **fields))
    assert {"normal/meta_no_preamble", "normal/bare"} <= set(table["path"])
    reasons = quarantine(tmp_path / "out")
    assert "no pixel data" in reasons["normal/bare_no_pixels"]
    assert "not a readable DICOM file" in reasons["normal/junk"]
    assert not any("cannot identify image" in r for r in reasons.values())
