import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import dataset_config
from PIL import Image

from medxfer.cache import cache_images, image_files, load_cached
from medxfer.imaging import load_image, read_image, resize
from medxfer.ingest import IngestError, classes_of, ingest_dataset, pseudonymize, salt_of


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


def test_train_fraction_keeps_a_stratified_share_of_training_patients(demo_root, tmp_path):
    for sub in ("full", "a", "b"):
        (tmp_path / sub).mkdir()
    full = run(tmp_path / "full", "mura", dataset_config(demo_root, "mura"))
    small = run(tmp_path / "a", "mura", dataset_config(demo_root, "mura", train_fraction=0.25))
    again = run(tmp_path / "b", "mura", dataset_config(demo_root, "mura", train_fraction=0.25))
    assert small["path"].tolist() == again["path"].tolist()  # seeded
    for split in ("val", "test"):
        assert small.loc[small["split"] == split, "path"].tolist() == full.loc[full["split"] == split, "path"].tolist()
    train_full, train_small = (t[t["split"] == "train"] for t in (full, small))
    assert set(train_small["path"]) < set(train_full["path"])
    for label in (0, 1):  # about a quarter of each label's training patients
        n_full = train_full.loc[train_full["label"] == label, "patient_id"].nunique()
        n_small = train_small.loc[train_small["label"] == label, "patient_id"].nunique()
        assert n_small >= 1 and abs(n_small - 0.25 * n_full) <= 1.5, (label, n_small, n_full)


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
    files = image_files(ds, list(table["path"]))  # DICOM paths are pseudonymous: found again by listing
    for i in (0, len(table) - 1):
        direct = load_image(files[i], "ct", ds["windows"], 64)
        assert np.array_equal(cached[i], direct)
    data = load_cached(tmp_path / "manifest.csv", tmp_path / "images_64.npy")
    assert data.classes == ["normal", "lesion"] and data.in_chans == 2
    assert sum(len(s.labels) for s in data.splits.values()) == len(table)


def entry(root, **fields) -> dict:
    """A validated data set entry for generated files under `root`."""
    from medxfer.config import validate

    conf = validate(
        {"datasets": {"d": {"root": str(root)} | fields}, "finetune": {"targets": ["d"], "inits": ["scratch"]}}
    )
    return conf["datasets"]["d"]


def noise(seed: int, shape=(20, 20)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_npz_medmnist_multilabel_is_a_label_set(tmp_path):
    images = {s: np.stack([noise(i + 100 * k) for i in range(6)]) for k, s in enumerate(("train", "val", "test"))}
    labels = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0], [0, 1, 0]], np.uint8)
    arrays = {f"{s}_images": x for s, x in images.items()} | {f"{s}_labels": labels for s in images}
    np.savez_compressed(tmp_path / "chest.npz", **arrays)
    ds = entry(tmp_path, format="npz", file="chest.npz", classes=["a", "b", "c"], max_reject_fraction=0)
    table = run(tmp_path / "out", "chest", ds)
    assert table.groupby("split").size().to_dict() == {"train": 6, "val": 6, "test": 6}
    assert table["label_name"].tolist()[:3] == ["a;c", "none", "b"]
    assert table.groupby("label_name")["label"].first().to_dict() == {"none": 0, "b": 1, "a;c": 2}
    assert table.loc[0, "path"] == "chest.npz#train_images[0]"
    assert table.loc[0, "sha256"] == hashlib.sha256(images["train"][0].tobytes()).hexdigest()


def test_npz_flat_ids_splits_unknown_labels_and_cache(tmp_path):
    images = np.stack([noise(i, (40, 30)) for i in range(12)]).astype(np.uint16) * 200  # 16-bit values
    ids = [f"img{i}" for i in range(11)] + ["img3"]  # the last id repeats
    np.savez(
        tmp_path / "flat.npz",
        images=images,
        labels=np.array([0, 1, 2] * 3 + [7, 0, 1]),  # 7 is not a class index
        label_names=np.array(["normal", "nodule", "mass"]),
        patient_ids=np.array([f"P{i // 2}" for i in range(12)]),
        image_ids=np.array(ids),
        split=np.array(["train"] * 8 + ["test", "test", "valid", "train"]),
    )
    ds = entry(tmp_path, format="npz", file="flat.npz", max_reject_fraction=0.5, size=16)
    table = run(tmp_path / "out", "flat", ds)
    reasons = pd.read_csv(tmp_path / "out" / "quarantine.csv").set_index("path")["reason"]
    assert reasons["flat.npz#images[9]"].startswith("unknown label 7")
    assert reasons["flat.npz#images[11]"] == "duplicate image id 'img3'"
    assert len(table) == 10 and table.groupby("split").size().to_dict() == {"train": 8, "val": 1, "test": 1}
    assert classes_of(table) == ["normal", "nodule", "mass"]
    cache_images(ds, tmp_path / "out" / "manifest.csv", tmp_path / "out" / "images_16.npy", threads=2)
    cached = np.load(tmp_path / "out" / "images_16.npy")
    direct = load_image(tmp_path / "flat.npz#images[4]", "xray", [], 16)
    assert cached.shape == (10, 1, 16, 16) and np.array_equal(cached[4], direct)
    native = read_image(tmp_path / "flat.npz#images[4]", "xray")  # 16-bit values scaled to the full 0..255
    assert native.shape == (1, 40, 30) and native.min() == 0 and native.max() == 255


def test_imagefolder_plain_and_split_layouts(tmp_path):
    plain = tmp_path / "plain"
    for k, label in enumerate(("cat_a", "cat_b")):
        for i in range(6):
            (plain / label / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(noise(i + 10 * k)).save(plain / label / f"sub{i % 2}" / f"{label}{i}.png")
    (plain / "cat_a" / "notes.txt").write_text("not an image")
    (plain / ".hidden").mkdir()
    table = run(tmp_path / "o1", "plain", entry(plain, format="imagefolder", max_reject_fraction=0.2))
    assert len(table) == 12 and table["patient_id"].nunique() == 12 and set(table["split"]) == {"train", "val", "test"}
    assert pd.read_csv(tmp_path / "o1" / "quarantine.csv")["reason"].str.contains("not an image file").all()
    split_root = tmp_path / "split"
    for j, (split, n) in enumerate((("train", 4), ("test", 2))):
        for k, label in enumerate(("neg", "pos")):
            (split_root / split / label).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(noise(100 + 10 * (2 * j + k) + i)).save(split_root / split / label / f"{i}.png")
    table = run(tmp_path / "o2", "split", entry(split_root, format="imagefolder"))
    assert table.loc[table["path"].str.startswith("test/"), "split"].eq("test").all()
    assert table.loc[table["path"].str.startswith("train/"), "split"].isin(["train", "val"]).all()
    assert classes_of(table) == ["neg", "pos"]


def test_an_entry_that_leaves_keys_out_takes_the_schemas_defaults_in_ingest_and_cache(tmp_path):
    """Library callers may pass the entry as written: ingest quarantines below the schema's min_image_side (16, not
    the decoder's 1) and the cache writes the schema's size, both exactly as for the workflow's filled entry."""
    root = tmp_path / "raw"
    for k, label in enumerate(("normal", "lesion")):
        (root / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(noise(i + 10 * k)).save(root / label / f"{i}.png")
    Image.fromarray(noise(99, (12, 40))).save(root / "lesion" / "thin.png")
    raw = {"format": "imagefolder", "root": str(root), "max_reject_fraction": 0.2}
    for out, ds in ((tmp_path / "raw_entry", raw), (tmp_path / "workflow_entry", entry(**raw))):
        out.mkdir()
        table = run(out, "d", ds)
        reasons = pd.read_csv(out / "quarantine.csv")["reason"].tolist()
        assert reasons == ["image is 40 x 12 pixels, smaller than min_image_side 16"] and len(table) == 12
        assert cache_images(ds, out / "manifest.csv", out / "images.npy") == (12, 1, 64, 64)
    for name in ("manifest.csv", "quarantine.csv", "images.npy"):
        assert (tmp_path / "raw_entry" / name).read_bytes() == (tmp_path / "workflow_entry" / name).read_bytes()


def test_dicom_series_folder_rows_and_salt(tmp_path, monkeypatch):
    from test_imaging import write_dicom

    root = tmp_path / "ct"
    for series, value in (("s1", 1064.0), ("s2", 1500.0), ("s3", 900.0)):
        (root / series).mkdir(parents=True)
        for k in range(3):
            write_dicom(root / series / f"IM{k:04d}", np.full((16, 16), value + k))  # no extension
    (root / "s2" / "notes.txt").write_text("series notes")
    (root / "single.dcm").write_bytes((root / "s1" / "IM0000").read_bytes())
    manifest = pd.DataFrame(
        {"series": ["s1", "s2", "s3", "s1"], "finding": ["0", "1", "0", "1"], "patient_id": ["A", "B", "C", "A"]}
    )
    manifest.to_csv(root / "labels.csv", index=False)
    fields = {"format": "dicom", "manifest": str(root / "labels.csv"), "modality": "ct", "max_reject_fraction": 0.5}
    fields |= {"columns": {"path": "series", "label": "finding"}, "classes": ["normal", "lesion"]}
    monkeypatch.setenv("MEDXFER_SALT", "env-salt")
    table = run(tmp_path / "o1", "ct", entry(root, **fields))
    assert len(table) == 9 and table.groupby("patient_id").size().tolist() == [3, 3, 3]
    assert table.groupby("study_id")["split"].nunique().max() == 1
    assert set(table["label_name"]) == {"normal", "lesion"}
    reasons = pd.read_csv(tmp_path / "o1" / "quarantine.csv")["reason"]
    assert reasons.str.contains("not a DICOM or image file").any() and reasons.str.contains("duplicate path").any()
    text = (tmp_path / "o1" / "manifest.csv").read_text()
    assert "Secret" not in text and "ID-123" not in text
    salted = run(tmp_path / "o2", "ct", entry(root, **fields, privacy={"salt": "config-salt"}))
    assert not set(salted["patient_id"]) & set(table["patient_id"])
    assert salted.loc[0, "patient_id"] == pseudonymize("A", "config-salt")
    assert table.loc[0, "patient_id"] == pseudonymize("A", "env-salt")


def test_top_level_salt_reaches_every_dataset():
    from medxfer.config import validate

    conf = validate(
        {
            "privacy": {"salt": "top"},
            "datasets": {"a": {"format": "imagefolder", "root": "x"}, "b": {"format": "mura", "root": "y"}}
            | {"c": {"format": "mura", "root": "z", "privacy": {"salt": "own"}}},
            "finetune": {"targets": ["a"], "inits": ["scratch"]},
        }
    )
    assert [salt_of(conf["datasets"][n]) for n in "abc"] == ["top", "top", "own"]


def test_bad_inputs_each_have_a_reason(tmp_path):
    from test_imaging import write_dicom

    root = tmp_path / "raw"
    root.mkdir()
    for i in range(4):
        Image.fromarray(noise(i)).save(root / f"ok{i}.png")
    (root / "zero.png").write_bytes(b"")
    data = (root / "ok0.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(noise(9)).save(root / "cut.jpg")
    (root / "cut.jpg").write_bytes((root / "cut.jpg").read_bytes()[:200])
    (root / "text.jpg").write_text("hello")
    write_dicom(root / "nopix.dcm", np.zeros((8, 8)), pixel=False)
    mpeg = pydicom.dcmread(write_dicom(root / "mpeg.dcm", np.full((8, 8), 1064.0)))
    mpeg.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    mpeg.PixelData = pydicom.encaps.encapsulate([b"\0" * 64])
    mpeg.save_as(root / "mpeg.dcm")
    cases = {
        "zero.png": "empty file",
        "truncated.png": "not a readable image",
        "cut.jpg": "not a readable image",
        "text.jpg": "not a readable image",
        "nopix.dcm": "no pixel data",
        "mpeg.dcm": "unsupported transfer syntax",
        "ok1.png": "unknown label 'tumour'",
        "../outside.png": "outside",
        "ok2.png": "duplicate path",  # listed again below
    }
    paths = list(cases) + ["ok0.png", "ok2.png", "ok3.png"]
    labels = ["normal"] * len(paths)
    labels[list(cases).index("ok1.png")] = "tumour"
    pd.DataFrame({"path": paths, "label": labels}).to_csv(root / "labels.csv", index=False)
    ds = entry(root, format="csv", manifest=str(root / "labels.csv"), classes=["normal"], max_reject_fraction=1)
    table = run(tmp_path / "out", "bad", ds)
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert sorted(table["path"]) == ["ok0.png", "ok2.png", "ok3.png"]
    assert len(quarantine) == len(cases)
    for name, reason in cases.items():
        rows = quarantine[quarantine["path"].str.endswith(name.lstrip("./"))]
        assert rows["reason"].str.contains(reason).any(), (name, quarantine.to_string())


def test_load_image_equals_resized_read_image(tmp_path):
    rgb = np.stack([noise(1, (50, 70)), noise(2, (50, 70)), noise(3, (50, 70))], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(noise(4, (33, 33))).save(tmp_path / "grey.jpg")
    for name in ("rgb.png", "grey.jpg"):
        expected = resize(read_image(tmp_path / name, "xray"), 24)
        assert np.array_equal(load_image(tmp_path / name, "xray", [], 24), expected)


def test_source_overlap_reads_only_what_pretraining_reads(demo_root, tmp_path):
    """The target's own data set as a source (self-supervised pretraining on its training images) holds every test
    image, but in its test split, which pretraining never learns from: it passes. Split with another seed, test
    images land in the source's train and val splits: it fails."""
    from medxfer.ingest import check_source_overlap

    ds = dataset_config(demo_root, "xray_source")
    tables = {}
    for name, seed in (("target", 0), ("same_split", 0), ("other_split", 1)):
        (tmp_path / name).mkdir()
        tables[name] = ingest_dataset(name, ds, tmp_path / name / "manifest.csv", tmp_path / name / "q.csv", seed=seed)
    target = tmp_path / "target" / "manifest.csv"
    report = check_source_overlap(target, {"own": tmp_path / "same_split" / "manifest.csv"}, tmp_path / "ok.json")
    assert report["n_test"] > 0 and report["overlap"]["own"]["count"] == 0
    assert report["source_splits"] == ["train", "val"]
    test_hashes = set(tables["target"].loc[tables["target"]["split"] == "test", "sha256"])
    other = tables["other_split"]
    leaked = other["split"].isin(["train", "val"]) & other["sha256"].isin(test_hashes)
    assert leaked.sum() > 0  # another seed moves some of the target's test images into training
    with pytest.raises(IngestError, match=rf"test images also in a pretraining source \(own: {leaked.sum()} "):
        check_source_overlap(target, {"own": tmp_path / "other_split" / "manifest.csv"}, tmp_path / "bad.json")


def test_source_overlap_finds_resized_and_reencoded_copies_of_test_images(demo_root, tmp_path):
    """The same pictures saved again at twice the size as JPEG have other bytes but the same perceptual hash: a
    source holding them in its training split would pretrain on the test set. Copies of training images pass."""
    from medxfer.ingest import check_source_overlap

    target = run(tmp_path, "mura", dataset_config(demo_root, "mura"))
    test_paths = target.loc[target["split"] == "test", "path"].iloc[:4].tolist()
    train_paths = target.loc[target["split"] == "train", "path"].iloc[:4].tolist()
    source_root = tmp_path / "source"

    def save_copy(image_file: Path, split: str, name: str) -> None:
        image = Image.open(image_file).convert("L")
        folder = source_root / split / name[-1]  # two classes, a and b
        folder.mkdir(parents=True, exist_ok=True)
        image.resize((2 * image.width, 2 * image.height), Image.Resampling.BICUBIC).save(folder / f"{name}.jpg")

    for i, path in enumerate(train_paths):
        save_copy(demo_root / "mura" / path, "train", f"train{i}{'ab'[i % 2]}")
    for i, path in enumerate(sorted((demo_root / "xray_source").rglob("*.png"))[:2]):
        save_copy(path, "test", f"other{i}{'ab'[i % 2]}")  # the source's own test split: never pretrained on
    source = dataset_config(demo_root, "mura", format="imagefolder", root=str(source_root))
    (tmp_path / "clean").mkdir()
    run(tmp_path / "clean", "source", source)
    clean = check_source_overlap(
        tmp_path / "manifest.csv", {"source": tmp_path / "clean" / "manifest.csv"}, tmp_path / "ok.json"
    )
    assert clean["overlap"]["source"]["count"] == 0

    for i, path in enumerate(test_paths):
        save_copy(demo_root / "mura" / path, "train", f"test{i}{'ab'[i % 2]}")
    (tmp_path / "leaky").mkdir()
    run(tmp_path / "leaky", "source", source)
    with pytest.raises(IngestError, match=r"test images also in a pretraining source \(source: \d+ .*0 exact, \d+ res"):
        check_source_overlap(
            tmp_path / "manifest.csv", {"source": tmp_path / "leaky" / "manifest.csv"}, tmp_path / "bad.json"
        )
    found = json.loads((tmp_path / "bad.json").read_text())["overlap"]["source"]
    assert found["exact"] == 0 and found["perceptual"] == found["count"] >= 1
    assert set(found["examples"]) <= set(test_paths)
    near = {pair["test"] for pair in found["near_examples"]}
    assert near <= set(test_paths) and found["count"] + found["near"] == len(test_paths)  # each copy: found or listed


def test_hashes_of_digits_only_come_back_as_written(demo_root, tmp_path):
    """A pHash of digits only would be read as a number (leading zeros lost, '1e40...' a float) and then equal no
    other image's hash: the overlap check compares them as text."""
    from medxfer.ingest import read_manifest

    run(tmp_path, "mura", dataset_config(demo_root, "mura"))
    manifest = pd.read_csv(tmp_path / "manifest.csv", dtype=str, keep_default_na=False)
    hashes = ["1e40000000000000"] + [f"{i:016d}" for i in range(1, len(manifest))]  # every one digits only
    manifest["phash"] = hashes
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    assert read_manifest(tmp_path / "manifest.csv")["phash"].tolist() == hashes


def test_source_overlap_finds_a_target_test_image_copied_into_the_source(demo_root, tmp_path):
    from medxfer.ingest import check_source_overlap

    for sub in ("target", "clean", "leaky"):
        (tmp_path / sub).mkdir()
    target = run(tmp_path / "target", "mura", dataset_config(demo_root, "mura"))
    test_image = demo_root / "mura" / target.loc[target["split"] == "test", "path"].iloc[0]
    source_root = tmp_path / "source"
    for i, path in enumerate(sorted((demo_root / "xray_source").rglob("*.png"))[:6]):
        (source_root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, source_root / f"c{i % 2}" / f"{i}.png")
    source = {"format": "imagefolder", "root": str(source_root)}
    run(tmp_path / "clean", "source", dataset_config(demo_root, "mura", **source))
    report = check_source_overlap(
        tmp_path / "target" / "manifest.csv", {"source": tmp_path / "clean" / "manifest.csv"}, tmp_path / "ok.json"
    )
    assert report["overlap"]["source"]["count"] == 0 and report["n_test"] == (target["split"] == "test").sum()
    shutil.copy(test_image, source_root / "c0" / "copied.png")
    run(tmp_path / "leaky", "source", dataset_config(demo_root, "mura", **source))
    with pytest.raises(IngestError, match=r"test images also in a pretraining source \(source: 1"):
        check_source_overlap(
            tmp_path / "target" / "manifest.csv", {"source": tmp_path / "leaky" / "manifest.csv"}, tmp_path / "bad.json"
        )
    assert json.loads((tmp_path / "bad.json").read_text())["overlap"]["source"]["examples"] == [
        str(test_image.relative_to(demo_root / "mura"))
    ]
