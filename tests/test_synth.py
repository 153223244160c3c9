"""Demo data generator: layouts, valid files, masks, determinism, atomic replacement and a learnability check."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medxfer import demo
from medxfer.demo import limb
from medxfer.io import sha256_file

SIZE = 48
SEED = 3
N_XRAY, N_MURA, N_CT = 60, 12, 10


def _read_labels(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["path", "label", "patient_id"]
        return list(reader)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.mode == "L"
        assert img.size == (SIZE, SIZE)
        return np.asarray(img)


def _mask(path: Path) -> np.ndarray:
    mask = _png(path)
    assert set(np.unique(mask).tolist()) <= {0, 255}
    return mask > 0


def _hu(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _ring(mask: np.ndarray, k: int = 2) -> np.ndarray:
    """Pixels within k of the mask but outside it: the 'surroundings' a finding must stand out from."""
    grown = mask.copy()
    padded = np.pad(mask, k)
    for dy in range(2 * k + 1):
        for dx in range(2 * k + 1):
            grown |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return grown & ~mask


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    demo.synthesize_xray_source(root / "xray", N_XRAY, SIZE, SEED)
    demo.synthesize_mura(root / "mura", N_MURA, SIZE, SEED)
    demo.synthesize_ct(root / "ct", N_CT, SIZE, SEED)
    return {"xray": root / "xray", "mura": root / "mura", "ct": root / "ct"}


def test_xray_source_layout_labels_and_masks(data: dict[str, Path]) -> None:
    root = data["xray"]
    rows = _read_labels(root)
    assert len(rows) == N_XRAY
    assert {r["label"] for r in rows} == set(demo.XRAY_CLASSES)
    per_patient: dict[str, int] = defaultdict(int)
    for row in rows:
        m = re.fullmatch(r"images/patient(\d{5})_img([123])\.png", row["path"])
        assert m, row["path"]
        assert row["patient_id"] == f"SRC{m.group(1)}"
        per_patient[row["patient_id"]] += 1
        _png(root / row["path"])
        mask = _mask(root / "masks" / row["path"])
        assert mask.any() == (row["label"] != "normal"), row
    assert set(per_patient.values()) <= {1, 2, 3}
    expected = {r["path"] for r in rows} | {f"masks/{r['path']}" for r in rows} | {"labels.csv"}
    assert _files(root) == expected  # nothing else, in particular no temp files


def test_mura_layout_splits_parts_and_masks(data: dict[str, Path]) -> None:
    root = data["mura"]
    pattern = re.compile(
        r"(train|valid)/XR_(HUMERUS|WRIST)/patient(\d{5})/study([12])_(positive|negative)/image(\d)\.png"
    )
    images = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png") if not p.is_relative_to(root / "masks"))
    assert images
    assert _files(root) == set(images) | {f"masks/{p}" for p in images}
    studies: dict[str, list[int]] = defaultdict(list)
    patient_home: dict[str, set[tuple[str, str]]] = defaultdict(set)
    seen: set[tuple[str, str]] = set()
    for rel in images:
        m = pattern.fullmatch(rel)
        assert m, rel
        split, part, pid, _, status, k = m.groups()
        seen.add((split, part))
        patient_home[pid].add((split, part))
        studies[rel.rsplit("/", 1)[0]].append(int(k))
        _png(root / rel)
        mask = _mask(root / "masks" / rel)
        assert mask.any() == (status == "positive"), rel
    assert seen == {(s, p) for s in ("train", "valid") for p in demo.MURA_PARTS}
    assert len(patient_home) == N_MURA
    assert all(len(homes) == 1 for homes in patient_home.values())  # one split and one part per patient
    assert all(sorted(ks) in ([1, 2], [1, 2, 3]) for ks in studies.values())
    positive = [s for s in studies if s.endswith("_positive")]
    assert 0.2 <= len(positive) / len(studies) <= 0.7


def test_ct_dicom_files_fields_and_hu(data: dict[str, Path]) -> None:
    root = data["ct"]
    rows = _read_labels(root)
    assert {r["label"] for r in rows} == set(demo.CT_CLASSES)
    assert _files(root) == {r["path"] for r in rows} | {f"masks/{r['path'][:-4]}.png" for r in rows} | {"labels.csv"}
    study_uids: dict[str, set[str]] = defaultdict(set)
    sop_uids = set()
    labels_by_patient: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        m = re.fullmatch(r"dicom/patient(\d{4})_slice([123])\.dcm", row["path"])
        assert m, row["path"]
        ds = pydicom.dcmread(root / row["path"])
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "CT"
        assert (ds.Rows, ds.Columns) == (SIZE, SIZE)
        assert (ds.BitsAllocated, ds.PixelRepresentation) == (16, 0)
        assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == -1024.0
        assert len(ds.PixelSpacing) == 2 and 2.0 < float(ds.PixelSpacing[0]) < 15.0
        assert str(ds.PatientName) == f"Demo^Patient{m.group(1)}"
        assert ds.PatientID == row["patient_id"] == f"DEMO-{m.group(1)}"
        assert re.fullmatch(r"(19|20)\d{6}", ds.PatientBirthDate)
        assert ds.InstitutionName and ds.StudyID and ds.StudyDate
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert re.fullmatch(r"[0-9]+(\.[0-9]+)+", str(uid)) and len(str(uid)) <= 64
        study_uids[ds.PatientID].add(str(ds.StudyInstanceUID))
        sop_uids.add(str(ds.SOPInstanceUID))
        labels_by_patient[ds.PatientID].add(row["label"])
        hu = _hu(root / row["path"])
        assert hu.min() < -900, "no air"
        assert hu.max() > 300, "no bone"
        lung_like = np.mean((hu > -950) & (hu < -700))
        assert lung_like > 0.05, "no lung"
        mask = _mask(root / "masks" / f"{row['path'][:-4]}.png")
        assert mask.any() == (row["label"] == "lesion"), row
    assert len(sop_uids) == len(rows)
    assert all(len(uids) == 1 for uids in study_uids.values())  # one study per patient
    assert all(len(labels) == 1 for labels in labels_by_patient.values())  # the label is a patient's


def test_findings_stand_out_from_their_surroundings(data: dict[str, Path]) -> None:
    """Learnability sanity check: inside each mask the image differs from the ring around it."""
    diffs: dict[str, list[float]] = defaultdict(list)
    for row in _read_labels(data["xray"]):
        if row["label"] != "normal":
            img = _png(data["xray"] / row["path"]).astype(float)
            mask = _mask(data["xray"] / "masks" / row["path"])
            diffs[row["label"]].append(img[mask].mean() - img[_ring(mask)].mean())
    for path in (data["mura"]).glob("*/XR_*/*/*_positive/*.png"):
        img = _png(path).astype(float)
        mask = _mask(data["mura"] / "masks" / path.relative_to(data["mura"]))
        diffs["mura"].append(img[mask].mean() - img[_ring(mask)].mean())
    for row in _read_labels(data["ct"]):
        if row["label"] == "lesion":
            hu = _hu(data["ct"] / row["path"])
            mask = _mask(data["ct"] / "masks" / f"{row['path'][:-4]}.png")
            diffs["ct"].append(hu[mask].mean() - hu[_ring(mask)].mean())
    assert np.mean(np.array(diffs["nodule"]) > 0) >= 0.8  # nodules are bright blobs
    assert np.mean(np.abs(diffs["nodule"])) > 8.0
    assert np.mean(np.abs(diffs["fracture"])) > 3.0
    assert np.mean(np.abs(diffs["mura"])) > 8.0
    # lung nodules are far denser than lung; chest-wall lesions (+30..80 HU) are subtle by design
    assert np.mean(np.array(diffs["ct"]) > 20.0) >= 0.6


@pytest.mark.parametrize(
    ("func", "count"),
    [(demo.synthesize_xray_source, 12), (demo.synthesize_mura, 4), (demo.synthesize_ct, 4)],
    ids=["xray", "mura", "ct"],
)
def test_deterministic_by_seed(tmp_path: Path, func, count: int) -> None:
    func(tmp_path / "a", count, 32, 11)
    func(tmp_path / "b", count, 32, 11)
    func(tmp_path / "c", count, 32, 12)
    first = _digests(tmp_path / "a")
    assert first and first == _digests(tmp_path / "b")
    assert first != _digests(tmp_path / "c")


def test_small_counts_still_cover_classes_and_splits(tmp_path: Path) -> None:
    demo.synthesize_xray_source(tmp_path / "x", 4, 32, 0)
    assert {r["label"] for r in _read_labels(tmp_path / "x")} == set(demo.XRAY_CLASSES)
    demo.synthesize_ct(tmp_path / "c", 2, 32, 0)
    assert {r["label"] for r in _read_labels(tmp_path / "c")} == set(demo.CT_CLASSES)
    demo.synthesize_mura(tmp_path / "m", 4, 32, 0)
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"train", "valid", "masks"}


def test_rerun_replaces_old_contents(tmp_path: Path) -> None:
    out = tmp_path / "ct"
    out.mkdir()
    (out / "stale.txt").write_text("left over from an earlier run")
    demo.synthesize_ct(out, 2, 32, 0)
    assert not (out / "stale.txt").exists()
    assert (out / "labels.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct"]  # no temp sibling left behind


def test_crash_keeps_previous_data_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "mura"
    demo.synthesize_mura(out, 2, 32, 0)
    before = _digests(out)
    calls = {"n": 0}
    real_save = limb.save_png

    def failing_save(path: Path, arr: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError("disk full")
        real_save(path, arr)

    monkeypatch.setattr(limb, "save_png", failing_save)
    with pytest.raises(OSError, match="disk full"):
        demo.synthesize_mura(out, 2, 32, 1)
    assert _digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mura"]


@pytest.mark.parametrize(("n", "size", "seed"), [(0, 32, 0), (2, 8, 0), (2, 32, -1)])
def test_rejects_bad_arguments(tmp_path: Path, n: int, size: int, seed: int) -> None:
    for func in (demo.synthesize_xray_source, demo.synthesize_mura, demo.synthesize_ct):
        with pytest.raises(ValueError):
            func(tmp_path / "out", n, size, seed)
    assert not (tmp_path / "out").exists()
