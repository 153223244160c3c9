"""Real DICOM files from the pydicom-data package (a pinned test dependency): CR radiographs (MONOCHROME1, JPEG
2000), CT with rescale, a VOI LUT, palette and 16-bit RGB, and a DICOM tree ingested without any manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import data_store
import numpy as np
import pandas as pd
import pydicom
import pytest

from medxfer.config import validate
from medxfer.imaging import ImageError, read_image
from medxfer.ingest import ingest_dataset

FILES = Path(data_store.__file__).parent / "data"


def decode(name: str, modality: str = "xray", windows=((40, 400),)) -> np.ndarray:
    return read_image(FILES / name, modality, windows)


def test_cr_radiograph_is_inverted_and_jpeg2000_lossless_decodes_identically():
    plain, j2k = decode("RG1_UNCR.dcm"), decode("RG1_J2KR.dcm")
    assert plain.shape == (1, 1955, 1841) and plain.dtype == np.uint8
    assert np.array_equal(plain, j2k)
    # MONOCHROME1: high stored values are dark, so the decoded image runs opposite to the raw values
    raw = pydicom.dcmread(FILES / "RG1_UNCR.dcm").pixel_array.astype(float)
    assert np.corrcoef(raw.ravel()[::97], plain[0].ravel()[::97].astype(float))[0, 1] < -0.9
    lossy = decode("RG1_J2KI.dcm").astype(int)
    assert 0 < np.abs(lossy - plain).mean() < 3  # lossy JPEG 2000: close, not equal


def test_second_cr_radiograph_uses_its_window():
    image = decode("RG3_UNCR.dcm")[0]
    assert image.shape == (1760, 1760)
    assert np.array_equal(image, decode("RG3_J2KR.dcm")[0])
    assert image.std() > 20  # the stored window spreads the anatomy over the grey range


def test_voi_lut_is_applied(tmp_path):
    ds = pydicom.dcmread(FILES / "vlut_04.dcm")
    # the file's own LUT is linear; a gamma curve in its place shows the LUT is really applied
    lut = np.round((np.arange(256) / 255.0) ** 2.2 * 65535).astype(np.uint16)
    ds.VOILUTSequence[0].LUTData = lut.tolist()
    ds.save_as(tmp_path / "gamma.dcm")
    image = read_image(tmp_path / "gamma.dcm", "xray")[0].astype(float)
    expected = lut[ds.pixel_array].astype(float) / 65535 * 255
    assert np.abs(image - expected).max() <= 0.5 + 1e-9
    raw = ds.pixel_array.astype(float)
    assert np.abs(image - raw).max() > 50  # not a plain rescale of the stored values


def test_ct_rescale_gives_hu_and_jpeg2000_matches_uncompressed():
    windows = [[40, 400], [-600, 1500]]
    plain = decode("693_UNCR.dcm", "ct", windows)
    assert plain.shape == (2, 512, 512)
    assert np.array_equal(plain, decode("693_J2KR.dcm", "ct", windows))
    ds = pydicom.dcmread(FILES / "693_UNCR.dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(plain[0] == 0, hu <= 40 - 200)  # below the soft-tissue window: black
    assert np.array_equal(plain[0] == 255, hu >= 40 + 200)


def test_colour_dicoms_become_grey():
    palette, rle = decode("OBXXXX1A.dcm"), decode("OBXXXX1A_rle.dcm")
    assert palette.shape == (1, 600, 800) and palette.std() > 5
    assert np.array_equal(palette, rle)
    rgb16 = decode("SC_rgb_16bit.dcm")
    assert rgb16.shape == (1, 100, 100) and len(np.unique(rgb16)) > 3
    assert np.array_equal(decode("SC_rgb_expb.dcm"), decode("SC_rgb.dcm"))  # big endian = little endian


def test_multi_frame_is_refused_with_its_frame_count():
    with pytest.raises(ImageError, match=r"emri_small\.dcm: multi-frame DICOM \(10 frames\)"):
        decode("emri_small.dcm")


def _tree(root: Path, layout: dict[str, list[str]]) -> None:
    for folder, names in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(FILES / name, root / folder / name.replace(".dcm", ""))  # no extension: found by preamble


def dicom_config(root: Path, **extra) -> dict:
    entry = {"format": "dicom", "root": str(root), **extra}
    conf = validate({"datasets": {"tree": entry}, "finetune": {"targets": ["tree"], "inits": ["scratch"]}})
    return conf["datasets"]["tree"]


def test_dicom_tree_without_manifest_labels_by_folder_and_patient_from_header(tmp_path):
    root = tmp_path / "raw"
    # RG1 and RG3 are two patients with two files each (lossless twins would be one image in two splits).
    _tree(root, {"normal": ["RG1_UNCR.dcm", "RG1_J2KI.dcm", "MR2_UNCR.dcm"], "fracture": ["RG3_UNCR.dcm"]})
    _tree(root, {"fracture/series2": ["RG3_J2KI.dcm", "emri_small.dcm"]})
    (root / "normal" / "notes.dcm").write_text("not a dicom file")
    lookup = tmp_path / "private" / "paths.csv"  # DICOM paths are pseudonymous; this maps them back
    ds = dicom_config(root, max_reject_fraction=0.5, val_fraction=0.3, test_fraction=0.3, path_lookup=str(lookup))
    out = tmp_path / "out"
    out.mkdir()
    table = ingest_dataset("tree", ds, out / "manifest.csv", out / "quarantine.csv", seed=3)
    real = dict(pd.read_csv(lookup).to_numpy())
    assert sorted(table["label_name"]) == ["fracture", "fracture", "normal", "normal", "normal"]
    # one patient id per DICOM PatientID, so both RG1 files share a patient and thus a split
    by_file = dict(zip(table["path"].map(real), table["patient_id"], strict=True))
    assert by_file["normal/RG1_UNCR"] == by_file["normal/RG1_J2KI"] != by_file["fracture/RG3_UNCR"]
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    quarantine = pd.read_csv(out / "quarantine.csv")
    reasons = dict(zip(quarantine["path"].map(real), quarantine["reason"], strict=True))
    assert set(reasons) == {"normal/notes.dcm", "fracture/series2/emri_small"}
    assert "multi-frame" in reasons["fracture/series2/emri_small"]
    assert "not a readable DICOM" in reasons["normal/notes.dcm"]
    # no identifying header value reaches the outputs
    written = (out / "manifest.csv").read_text() + (out / "quarantine.csv").read_text()
    for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm", "MR2_UNCR.dcm"):
        header = pydicom.dcmread(FILES / name, stop_before_pixels=True)
        for field in ("PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID"):
            value = str(header.get(field, "") or "")
            assert not value or value not in written, (name, field)


def test_dicom_tree_unlabeled(tmp_path):
    root = tmp_path / "raw"
    _tree(root, {"a": ["RG1_UNCR.dcm", "693_UNCR.dcm"], "b/c": ["MR2_UNCR.dcm"]})
    out = tmp_path / "out"
    out.mkdir()
    ds = dicom_config(root, labels="none", pseudonymous_paths=False)
    table = ingest_dataset("tree", ds, out / "m.csv", out / "q.csv", seed=0)
    assert sorted(table["path"]) == ["a/693_UNCR", "a/RG1_UNCR", "b/c/MR2_UNCR"]
    assert set(table["label_name"]) == {"none"}


def test_tcga_manifest_without_patient_column_splits_by_header_patient(tmp_path):
    """The TCGA CT slices (54 patients, up to 6 slices each) listed without a patient column: the header's
    PatientID keeps every patient in one split, where one patient per slice spread patients over splits."""
    from conftest import REPO, SHARED

    from medxfer.config import load
    from medxfer.ingest import pseudonymize, salt_of

    if not (SHARED / "data" / "ct_tcga_contrast").is_dir():
        pytest.skip("../shared/data/ct_tcga_contrast not found")
    labels = pd.read_csv(SHARED / "data" / "ct_tcga_contrast" / "labels.csv")
    labels[["file", "contrast"]].to_csv(tmp_path / "labels.csv", index=False)
    ds = load(REPO / "config" / "ct_tcga.yaml")["datasets"]["ct_tcga"]
    ds |= {"root": str(SHARED / "data" / "ct_tcga_contrast"), "manifest": str(tmp_path / "labels.csv"), "size": 16}
    table = ingest_dataset("ct", ds, tmp_path / "manifest.csv", tmp_path / "quarantine.csv", seed=0)
    assert len(table) == 100 and table["patient_id"].nunique() == 54
    assert set(table["patient_id"]) == {pseudonymize(p, salt_of(ds)) for p in labels["patient_id"]}
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    # main's behaviour, each slice its own patient, on the same slices and seed: patients spread over splits
    labels.assign(patient_id=labels["file"])[["file", "contrast", "patient_id"]].to_csv(tmp_path / "each.csv")
    each = ds | {"manifest": str(tmp_path / "each.csv"), "pseudonymous_paths": False, "leakage": "drop"}
    per_slice = ingest_dataset("ct", each, tmp_path / "m2.csv", tmp_path / "q2.csv", seed=0)
    true_patient = per_slice["path"].map(dict(zip(labels["file"], labels["patient_id"], strict=True)))
    assert (per_slice.groupby(true_patient)["split"].nunique() > 1).sum() > 5
