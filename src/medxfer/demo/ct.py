"""CT demo data: axial chest slices in HU, written as DICOM with fake identifying fields, lesion vs normal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medxfer.demo.common import (
    TAG_CT,
    Array,
    Pose,
    balanced_labels,
    blur,
    check_args,
    ellipse,
    mask_from_effect,
    save_png,
    seeded_rng,
    soft_inside,
    staged_dir,
    write_csv,
)

CT_CLASSES: tuple[str, ...] = ("normal", "lesion")

_CT_CHEST_MM = 300.0  # z extent that slice positions in [0, 1] map to


@dataclass(frozen=True)
class _ChestCT:
    """A patient's chest in CT coordinates (x right, y posterior, both in half field-of-view units)."""

    fov_mm: float
    body_rx: float
    body_ry: float
    body_cy: float
    fat: float
    fat_hu: float
    tissue_hu: float
    lung_cx: float
    lung_cy: float
    lung_rx: float
    lung_ry: float
    lung_hu: float
    spine_r: float
    cancellous_hu: float
    cortex_hu: float
    contrast: bool
    n_ribs: int
    noise_hu: float
    pose: Pose
    sex: str
    birth_date: str
    study_date: str


def _ct_anatomy(rng: np.random.Generator) -> _ChestCT:
    year, month, day = int(rng.integers(1935, 1996)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    s_month, s_day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    body_rx, body_ry, body_cy = rng.uniform(0.72, 0.88), rng.uniform(0.5, 0.62), rng.uniform(-0.02, 0.06)
    fat = rng.uniform(0.03, 0.1)
    lung_cx, lung_cy = rng.uniform(0.3, 0.36), body_cy - rng.uniform(0.02, 0.06)
    # the lungs stay inside the rib cage (ribs sit ~0.05 inside the muscle wall)
    lung_rx = min(rng.uniform(0.24, 0.3), body_rx - fat - 0.1 - lung_cx)
    lung_ry = min(rng.uniform(0.34, 0.42), body_ry - fat - 0.1 - (body_cy - lung_cy))
    return _ChestCT(
        fov_mm=rng.uniform(340.0, 420.0),
        body_rx=body_rx,
        body_ry=body_ry,
        body_cy=body_cy,
        fat=fat,
        fat_hu=rng.uniform(-120.0, -80.0),
        tissue_hu=rng.uniform(35.0, 55.0),
        lung_cx=lung_cx,
        lung_cy=lung_cy,
        lung_rx=lung_rx,
        lung_ry=lung_ry,
        lung_hu=rng.uniform(-880.0, -800.0),
        spine_r=rng.uniform(0.08, 0.1),
        cancellous_hu=rng.uniform(220.0, 350.0),
        cortex_hu=rng.uniform(800.0, 1150.0),
        contrast=bool(rng.random() < 0.5),
        n_ribs=int(rng.integers(10, 14)),
        noise_hu=rng.uniform(8.0, 22.0),
        pose=Pose(rng.uniform(-0.06, 0.06), 1.0, rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.04)),
        sex=str(rng.choice(["F", "M"])),
        birth_date=f"{year:04d}{month:02d}{day:02d}",
        study_date=f"2023{s_month:02d}{s_day:02d}",
    )


@dataclass(frozen=True)
class _CTLesion:
    kind: str  # solid | subsolid | soft
    side: float
    u: float  # position inside the lung (lung-normalised) or offset in the anterior mediastinum
    v: float
    radius_mm: float
    hu: float  # absolute HU for lung nodules, contrast above soft tissue for mediastinal masses
    halo: float = 0.0  # ground-glass halo radius as a multiple of the nodule radius (0 = none)
    halo_hu: float = -550.0


def _ct_lesion(rng: np.random.Generator) -> _CTLesion:
    kind = str(rng.choice(["solid", "subsolid", "soft"], p=[0.75, 0.1, 0.15]))
    r, ang = 0.7 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
    if kind == "soft":
        return _CTLesion(
            kind,
            float(rng.choice([-1.0, 1.0])),
            rng.uniform(-0.05, 0.05),
            rng.uniform(0.0, 0.1),
            rng.uniform(18.0, 35.0),
            rng.uniform(50.0, 100.0),
        )
    hu = rng.uniform(30.0, 80.0) if kind == "solid" else rng.uniform(-550.0, -250.0)
    radius = math.exp(rng.uniform(math.log(20.0), math.log(45.0)))
    halo = rng.uniform(1.5, 2.5) if kind == "solid" and rng.random() < 0.6 else 0.0
    return _CTLesion(
        kind,
        float(rng.choice([-1.0, 1.0])),
        r * math.cos(ang),
        r * math.sin(ang),
        radius,
        hu,
        halo,
        rng.uniform(-700.0, -450.0),
    )


def _paint(hu: Array, alpha: Array, value: float | Array) -> Array:
    return hu + alpha * (value - hu)


def _ct_slice(
    size: int, a: _ChestCT, z: float, lesion: _CTLesion | None, dz_mm: float, rng: np.random.Generator
) -> tuple[Array, Array]:
    """HU image of one axial slice at chest position z in [0, 1] (apex to base) and the lesion mask. Long: the
    anatomy is painted in order, body wall to lesion, and splitting it would only pass the same arrays around."""
    x, y, px = a.pose.coords(size)
    hu = np.full((size, size), -1000.0)
    hu = _paint(
        hu,
        soft_inside(0.025 - np.abs(y - (a.body_cy + a.body_ry + 0.06)), px) * soft_inside(0.85 - np.abs(x), px),
        rng.uniform(80.0, 200.0),
    )  # table
    hu = _paint(hu, ellipse(x, y, 0.0, a.body_cy, a.body_rx, a.body_ry, px), a.fat_hu)
    hu = _paint(hu, ellipse(x, y, 0.0, a.body_cy, a.body_rx - a.fat, a.body_ry - a.fat, px), a.tissue_hu)
    lung_scale = 0.55 + 0.45 * math.sin(math.pi * (0.12 + 0.8 * z))
    lrx, lry = a.lung_rx * (0.8 + 0.2 * lung_scale), a.lung_ry * lung_scale
    lungs = [(ellipse(x, y, s * a.lung_cx, a.lung_cy, lrx, lry, px), s) for s in (-1.0, 1.0)]
    for alpha, _ in lungs:
        hu = _paint(hu, alpha, a.lung_hu + 60.0 * (y - a.lung_cy) / lry)  # dependent lung is denser
    for alpha, s in lungs:  # vessels: small bright dots that a small nodule can be confused with
        for _ in range(int(rng.integers(3, 9))):
            r, ang = 0.85 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
            cx, cy = s * a.lung_cx + r * lrx * math.cos(ang), a.lung_cy + r * lry * math.sin(ang)
            rad = rng.uniform(0.006, 0.018) * (1.3 - 0.6 * r)
            hu = _paint(hu, alpha * ellipse(x, y, cx, cy, rad, rad, px), rng.uniform(-300.0, 0.0))
    heart = float(np.clip((z - 0.35) / 0.35, 0.0, 1.0))
    if heart > 0:
        hu = _paint(
            hu,
            ellipse(x, y, 0.06, a.lung_cy - 0.03, 0.3 * heart + 0.02, 0.24 * heart + 0.02, px, 0.4),
            a.fat_hu + 20.0,
        )
        hu = _paint(
            hu,
            ellipse(x, y, 0.08, a.lung_cy - 0.02, 0.25 * heart + 0.01, 0.2 * heart + 0.01, px, 0.4),
            150.0 if a.contrast else 40.0,
        )
    aorta_hu = 220.0 if a.contrast else 45.0
    spine_cy = a.body_cy + a.body_ry - a.spine_r - 0.12
    hu = _paint(hu, ellipse(x, y, 0.09, spine_cy - a.spine_r - 0.05, 0.055, 0.055, px), aorta_hu)
    if 0.25 < z < 0.6:
        hu = _paint(hu, ellipse(x, y, -0.06, a.lung_cy - 0.12, 0.06, 0.06, px), aorta_hu)
    hu = _paint(hu, ellipse(x, y, 0.0, spine_cy, a.spine_r, a.spine_r, px), a.cortex_hu)
    hu = _paint(hu, ellipse(x, y, 0.0, spine_cy, 0.72 * a.spine_r, 0.72 * a.spine_r, px), a.cancellous_hu)
    canal_y = spine_cy + a.spine_r + 0.045
    hu = _paint(hu, ellipse(x, y, 0.0, canal_y, 0.07, 0.06, px), 0.7 * a.cortex_hu)
    hu = _paint(hu, ellipse(x, y, 0.0, canal_y, 0.04, 0.035, px), 15.0)
    hu = _paint(hu, ellipse(x, y, 0.0, canal_y + 0.09, 0.02, 0.05, px), 0.8 * a.cortex_hu)
    hu = _paint(hu, ellipse(x, y, 0.0, a.body_cy - a.body_ry + a.fat + 0.03, 0.05, 0.025, px), 0.6 * a.cortex_hu)
    phase = 0.6 * z
    for i in range(a.n_ribs):  # rib cross-sections just inside the chest wall, skipping front and back midline
        ang = math.pi * (0.15 + 0.7 * (i // 2) / max(1, a.n_ribs // 2 - 1)) + phase * 0.2
        ang = ang if i % 2 == 0 else math.pi - ang
        ang = ang + (math.pi if (i // 2) % 2 else 0.0)
        rx, ry = a.body_rx - a.fat - 0.05, a.body_ry - a.fat - 0.05
        cx, cy = rx * math.cos(ang), a.body_cy + ry * math.sin(ang)
        hu = _paint(hu, ellipse(x, y, cx, cy, 0.035, 0.024, px, ang), a.cortex_hu * rng.uniform(0.75, 1.0))
    if z < 0.5:  # scapulae
        for s in (-1.0, 1.0):
            sx = s * 0.55 * a.body_rx
            sy = a.body_cy + 0.97 * a.body_ry * math.sqrt(1.0 - (sx / a.body_rx) ** 2) - 0.05
            hu = _paint(hu, ellipse(x, y, sx, sy, 0.18, 0.025, px, -s * 0.5), 0.7 * a.cortex_hu)
    effect = np.zeros_like(x)
    if lesion is not None:
        r_mm = math.sqrt(max(lesion.radius_mm**2 - dz_mm**2, 0.25 * lesion.radius_mm**2))
        r = r_mm / (a.fov_mm / 2.0)
        if lesion.kind == "soft":  # anterior mediastinal mass: subtle against soft tissue, obvious against lung
            cx, cy = lesion.u, a.body_cy - a.body_ry + a.fat + 0.1 + lesion.v + r
            alpha = ellipse(x, y, cx, cy, r, r * rng.uniform(0.8, 1.0), px) * (hu < 300.0)
            before = hu
            hu = _paint(hu, alpha, a.tissue_hu + lesion.hu)
            effect = hu - before
        else:
            cx, cy = lesion.side * a.lung_cx + lesion.u * lrx, a.lung_cy + lesion.v * lry
            alpha = ellipse(x, y, cx, cy, r, r * rng.uniform(0.85, 1.0), px)
            effect = alpha * np.maximum(lesion.hu - hu, 0.0)  # the mask follows the nodule itself, not its halo
            if lesion.halo:
                lung = sum(lung_alpha for lung_alpha, _ in lungs)
                r_halo = min(lesion.halo * r, r + 12.0 / (a.fov_mm / 2.0))
                halo = ellipse(x, y, cx, cy, r_halo, r_halo, 2 * px) * lung
                hu = _paint(hu, halo, np.maximum(hu, lesion.halo_hu + rng.uniform(0.0, 60.0)))
            hu = _paint(hu, alpha, np.maximum(hu, lesion.hu))  # a nodule adds density, never removes it
    hu = blur(hu, 0.5 * size / 64) + rng.normal(0.0, a.noise_hu, hu.shape)
    mask = np.zeros((size, size), np.uint8) if lesion is None else mask_from_effect(blur(effect, 0.5 * size / 64))
    return hu, mask


def _write_ct_dicom(
    path: Path, stored: Array, a: _ChestCT, uids: dict[str, str], pid: int, k: int, z_mm: float, size: int
) -> None:
    """A valid CT Image Storage file with fake but realistic identifying fields (for privacy handling tests). Long:
    one assignment per DICOM attribute."""
    spacing = a.fov_mm / size
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = uids["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uids["sop"]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = a.study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101500"
    ds.AccessionNumber = f"ACC{pid:06d}"
    ds.Modality = "CT"
    ds.Manufacturer = "medxfer synthetic"
    ds.InstitutionName = "Demo General Hospital"
    ds.InstitutionAddress = "1 Example Street, Demo City"
    ds.ReferringPhysicianName = "Demo^Referrer"
    ds.StationName = "DEMOCT01"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = "Chest 5mm"
    ds.OperatorsName = "Demo^Operator"
    ds.PatientName = f"Demo^Patient{pid:04d}"
    ds.PatientID = f"DEMO-{pid:04d}"
    ds.PatientBirthDate = a.birth_date
    ds.PatientSex = a.sex
    ds.PatientAge = f"{int(a.study_date[:4]) - int(a.birth_date[:4]):03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "5"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.StudyID = f"{pid:04d}"
    ds.SeriesNumber = 1
    ds.InstanceNumber = k
    corner = f"{-a.fov_mm / 2 + spacing / 2:.3f}"
    ds.ImagePositionPatient = [corner, corner, f"{z_mm:.2f}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.SliceLocation = f"{z_mm:.2f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.PixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def _ct_uids(seed: int, pid: int, k: int) -> dict[str, str]:
    """Deterministic UIDs: the same seed gives the same study/series/instance UIDs on every run."""
    base = ["medxfer-synth-ct", str(int(seed)), str(pid)]  # a fixed salt (the old module name): keeps UIDs stable
    return {
        "study": generate_uid(entropy_srcs=[*base, "study"]),
        "series": generate_uid(entropy_srcs=[*base, "series"]),
        "frame": generate_uid(entropy_srcs=[*base, "frame"]),
        "sop": generate_uid(entropy_srcs=[*base, "sop", str(k)]),
    }


def synthesize_ct(out_dir: Path, n_patients: int, size: int, seed: int) -> None:
    """Binary CT target set (lesion vs normal, by patient): 1-3 DICOM slices per patient with HU anatomy.

    Writes dicom/patient{pid:04d}_slice{k}.dcm, masks/dicom/patient{pid:04d}_slice{k}.png and labels.csv
    (path,label,patient_id with patient_id = the DICOM PatientID).
    """
    check_args(size, n_patients, "n_patients")
    plan = seeded_rng(seed, TAG_CT)
    has_lesion = balanced_labels(plan, n_patients, (0.5, 0.5))
    rows: list[tuple[str, str, str]] = []
    with staged_dir(Path(out_dir)) as tmp:
        for p in range(n_patients):
            pid = p + 1
            prng = seeded_rng(seed, TAG_CT, pid)
            anatomy = _ct_anatomy(prng)
            lesion = _ct_lesion(prng) if has_lesion[p] else None
            n_slices = int(prng.integers(1, 4))
            z0 = prng.uniform(0.2, 0.85)
            if lesion is None:
                dz = np.sort(prng.choice(np.arange(-3, 4), n_slices, replace=False)) * prng.uniform(5.0, 10.0)
            else:
                dz = np.sort(prng.uniform(-0.6, 0.6, n_slices)) * lesion.radius_mm
            for k in range(1, n_slices + 1):
                z_mm = z0 * _CT_CHEST_MM + float(dz[k - 1])
                hu, mask = _ct_slice(
                    size, anatomy, z_mm / _CT_CHEST_MM, lesion, float(dz[k - 1]), seeded_rng(seed, TAG_CT, pid, k)
                )
                stored = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)
                rel = f"dicom/patient{pid:04d}_slice{k}.dcm"
                _write_ct_dicom(tmp / rel, stored, anatomy, _ct_uids(seed, pid, k), pid, k, -z_mm, size)
                save_png(tmp / "masks" / f"dicom/patient{pid:04d}_slice{k}.png", mask)
                rows.append((rel, CT_CLASSES[1] if lesion is not None else CT_CLASSES[0], f"DEMO-{pid:04d}"))
        write_csv(tmp / "labels.csv", ("path", "label", "patient_id"), rows)
