"""Each reader on real files: ../shared/data (MedMNIST and flat .npz, TCGA DICOM CT) and pydicom's own test files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import REPO, SHARED
from pydicom.data import get_testdata_file

from medxfer.cache import cache_images, image_files
from medxfer.config import load
from medxfer.imaging import ImageError, load_image, npz_array, read_image
from medxfer.ingest import ingest_dataset

DATA = SHARED / "data"
CONFIGS = ("pneumoniamnist", "nih_cxr8", "fracatlas", "ct_tcga", "mura")


def real_dataset(config: str, name: str) -> dict:
    """A data set entry of a shipped config, with its root made absolute (configs are relative to the repo)."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not found: real-data tests need ../shared/data beside the repository")
    ds = load(REPO / "config" / f"{config}.yaml")["datasets"][name]
    ds["root"] = str((REPO / ds["root"]).resolve())
    if "manifest" in ds:
        ds["manifest"] = str((REPO / ds["manifest"]).resolve())
    return ds


def ingest(tmp_path: Path, name: str, ds: dict) -> pd.DataFrame:
    return ingest_dataset(name, ds, tmp_path / "manifest.csv", tmp_path / "quarantine.csv", seed=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_validate(name):
    conf = load(REPO / "config" / f"{name}.yaml")
    assert set(conf["finetune"]["targets"]) <= set(conf["datasets"])
    assert conf["pretrain"]["source"] in conf["datasets"]


def test_pneumoniamnist_keeps_official_splits_and_drops_cross_split_copies(tmp_path):
    ds = real_dataset("pneumoniamnist", "pneumoniamnist")
    table = ingest(tmp_path, "pneumoniamnist", ds)
    # official 4708 / 524 / 624; 8 val images are byte-identical to train images: quarantined as leakage
    assert table.groupby("split").size().to_dict() == {"train": 4708, "val": 516, "test": 624}
    quarantine = pd.read_csv(tmp_path / "quarantine.csv")
    assert len(quarantine) == 8 and quarantine["reason"].str.startswith("leakage").all()
    raw = np.load(DATA / "pneumoniamnist.npz")
    train = table[table["split"] == "train"]
    assert (train["label"].to_numpy() == raw["train_labels"][:, 0]).all()
    assert dict(zip(train["label"], train["label_name"], strict=False)) == {0: "normal", 1: "pneumonia"}
    # the cache at native size holds exactly the file's pixels
    cache_images(ds | {"size": 28}, tmp_path / "manifest.csv", tmp_path / "images_28.npy", threads=2)
    cached = np.load(tmp_path / "images_28.npy")
    assert np.array_equal(cached[: len(train), 0], raw["train_images"])


def test_nih_flat_layout_splits_by_patient(tmp_path):
    table = ingest(tmp_path, "nih", real_dataset("nih_cxr8", "nih_cxr8"))
    raw = np.load(DATA / "nih_cxr8_talo_64.npz")
    assert len(table) == 999 and table["patient_id"].nunique() == 682
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    assert set(table["split"]) == {"train", "val", "test"}
    assert (table["label"].to_numpy() == raw["labels"]).all()
    assert table.loc[table["label"] == 0, "label_name"].eq("no_finding").all()
    text = (tmp_path / "manifest.csv").read_text()
    assert not any(pid in text for pid in raw["patient_ids"][:50])


def test_fracatlas_each_image_is_its_own_patient(tmp_path):
    table = ingest(tmp_path, "fracatlas", real_dataset("fracatlas", "fracatlas"))
    assert len(table) == 3938 and table["patient_id"].nunique() == 3938
    assert table.groupby("label_name").size().to_dict() == {"fractured": 699, "non_fractured": 3239}
    assert table.loc[table["label_name"] == "fractured", "label"].eq(1).all()  # the file's label order is kept
    val = table[table["split"] == "val"]
    assert 0.1 < len(val) / len(table) < 0.2 and set(val["label_name"]) == {"fractured", "non_fractured"}


def test_tcga_ct_windows_patients_and_privacy(tmp_path):
    ds = real_dataset("ct_tcga", "ct_tcga")
    table = ingest(tmp_path, "ct", ds)
    labels = pd.read_csv(Path(ds["manifest"]))
    assert len(table) == 100 and table["patient_id"].nunique() == 54
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    assert table.groupby("label_name").size().to_dict() == {"contrast": 50, "no_contrast": 50}
    text = (tmp_path / "manifest.csv").read_text() + (tmp_path / "quarantine.csv").read_text()
    assert "TCGA-" not in text and not any(pid in text for pid in labels["patient_id"])
    # HU = raw * slope + intercept; each window [c, w] is one channel
    files = image_files(ds, list(table["path"]))  # DICOM paths are pseudonymous: found again by listing
    path = files[0]
    ds_dcm = pydicom.dcmread(path)
    hu = ds_dcm.pixel_array * float(ds_dcm.RescaleSlope) + float(ds_dcm.RescaleIntercept)
    image = read_image(path, "ct", ds["windows"])
    assert image.shape == (3, 512, 512)
    for channel, (center, width) in zip(image, ds["windows"], strict=True):
        expected = np.round((np.clip(hu, center - width / 2, center + width / 2) - center + width / 2) / width * 255)
        assert np.abs(channel.astype(int) - expected).max() <= 1
    cache_images(ds | {"size": 32}, tmp_path / "manifest.csv", tmp_path / "images_32.npy", threads=2)
    cached = np.load(tmp_path / "images_32.npy")
    assert cached.shape == (100, 3, 32, 32)
    assert np.array_equal(cached[7], load_image(files[7], "ct", ds["windows"], 32))


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_compressed_dicom_decodes_like_uncompressed(name):
    reference = read_image(get_testdata_file("MR_small.dcm"), "xray")
    assert np.array_equal(read_image(get_testdata_file(name), "xray"), reference)


def test_jpeg2000_ct_is_windowed():
    image = read_image(get_testdata_file("693_J2KI.dcm"), "ct", [[-600, 1500], [40, 400]])
    assert image.shape == (2, 512, 512) and image[0].std() > 10


def test_truncated_and_unsupported_dicom_are_image_errors(tmp_path):
    with pytest.raises(ImageError, match="cannot decode pixel data"):
        read_image(get_testdata_file("MR_truncated.dcm"), "xray")
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: pydicom has no decoder
    ds.save_as(tmp_path / "mpeg.dcm")
    with pytest.raises(ImageError, match="unsupported transfer syntax MPEG2"):
        read_image(tmp_path / "mpeg.dcm", "xray")


def test_npz_arrays_are_read_once_and_shared():
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not found: real-data tests need ../shared/data beside the repository")
    first = npz_array(DATA / "fracatlas_64.npz", "images")
    assert npz_array(DATA / "fracatlas_64.npz", "images") is first and not first.flags.writeable
