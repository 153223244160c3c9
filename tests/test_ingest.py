import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import dataset_config

from medxfer.cache import cache_images, load_cached
from medxfer.imaging import load_image
from medxfer.ingest import IngestError, ingest_dataset


def run(tmp_path, name, ds):
    return ingest_dataset(name, ds, tmp_path / "manifest.csv", tmp_path / "quarantine.csv", seed=0)


def test_mura_layout_labels_splits_and_patients(demo_root, tmp_path):
    table = run(tmp_path, "mura", dataset_config(demo_root, "mura"))
    assert set(table["split"]) == {"train", "val", "test"}
    assert set(table["label_name"]) == {"negative", "positive"}
    assert (table.loc[table["label_name"] == "positive", "label"] == 1).all()
    # valid/ is the test split; no patient is in two splits
    assert table.loc[table["path"].str.startswith("valid/"), "split"].eq("test").all()
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    # positives carry their mask
    assert (table.loc[table["label"] == 1, "mask"] != "").all()


def test_body_part_filter(demo_root, tmp_path):
    table = run(tmp_path, "mura", dataset_config(demo_root, "mura", body_parts=["XR_WRIST"]))
    assert table["path"].str.contains("XR_WRIST").all()


def test_dicom_patient_ids_are_pseudonymised(demo_root, tmp_path):
    table = run(tmp_path, "ct", dataset_config(demo_root, "ct"))
    text = (tmp_path / "manifest.csv").read_text()
    raw_ids = pd.read_csv(demo_root / "ct" / "labels.csv")["patient_id"]
    assert not any(pid in text for pid in raw_ids)
    assert "Demo^" not in text
    assert table["patient_id"].str.fullmatch(r"[0-9a-f]{16}").all()


def test_bad_files_are_quarantined_not_fatal(demo_root, tmp_path):
    root = tmp_path / "src"
    shutil.copytree(demo_root / "xray_source", root)
    labels = pd.read_csv(root / "labels.csv")
    (root / labels.loc[0, "path"]).write_bytes(b"")
    extra = pd.DataFrame({"path": ["../outside.png"], "label": ["normal"], "patient_id": ["X"]})
    pd.concat([labels, extra]).to_csv(root / "labels.csv", index=False)
    ds = dataset_config(demo_root, "xray_source", root=str(root), manifest=str(root / "labels.csv"))
    table = run(tmp_path, "src", ds)
    quarantine = pd.read_csv(tmp_path / "quarantine.csv")
    assert len(quarantine) == 2 and len(table) == len(labels) - 1
    assert quarantine["reason"].str.contains("empty file").any()
    assert quarantine["reason"].str.contains("outside").any()


def test_too_many_rejections_stop_with_count(demo_root, tmp_path):
    root = tmp_path / "src"
    shutil.copytree(demo_root / "xray_source", root)
    labels = pd.read_csv(root / "labels.csv")
    for rel in labels["path"][:10]:
        (root / rel).write_text("garbage")
    ds = dataset_config(demo_root, "xray_source", root=str(root), manifest=str(root / "labels.csv"))
    with pytest.raises(IngestError, match=f"10 of {len(labels)} files rejected"):
        run(tmp_path, "src", ds)
    assert len(pd.read_csv(tmp_path / "quarantine.csv")) == 10


def test_same_image_in_two_splits_is_leakage(demo_root, tmp_path):
    root = tmp_path / "src"
    shutil.copytree(demo_root / "xray_source", root)
    labels = pd.read_csv(root / "labels.csv")
    labels["split"] = ["train"] * (len(labels) - 1) + ["test"]
    shutil.copy(root / labels.loc[0, "path"], root / labels.loc[len(labels) - 1, "path"])
    labels.to_csv(root / "labels.csv", index=False)
    ds = dataset_config(demo_root, "xray_source", root=str(root), manifest=str(root / "labels.csv"))
    with pytest.raises(IngestError, match="more than one split"):
        run(tmp_path, "src", ds)


def test_split_is_deterministic_and_stratified(demo_root, tmp_path):
    ds = dataset_config(demo_root, "xray_source")
    first = run(tmp_path, "src", ds)
    second = run(tmp_path, "src", ds)
    assert first["split"].tolist() == second["split"].tolist()
    assert set(first.loc[first["split"] == "val", "label_name"]) == set(first["label_name"])


def test_cache_equals_direct_decode(demo_root, tmp_path):
    ds = dataset_config(demo_root, "ct")
    table = run(tmp_path, "ct", ds)
    cache_images(ds, tmp_path / "manifest.csv", tmp_path / "images_64.npy", threads=2)
    cached = np.load(tmp_path / "images_64.npy")
    assert cached.shape == (len(table), 2, 64, 64) and cached.dtype == np.uint8
    for i in (0, len(table) - 1):
        direct = load_image(demo_root / "ct" / table.loc[i, "path"], "ct", ds["windows"], 64)
        assert np.array_equal(cached[i], direct)
    data = load_cached(tmp_path / "manifest.csv", tmp_path / "images_64.npy")
    assert data.classes == ["normal", "lesion"] and data.in_chans == 2
    assert sum(len(s.labels) for s in data.splits.values()) == len(table)
