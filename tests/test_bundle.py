"""Bundles and prediction on the tiny workflow run: the bundle reproduces the workflow's test predictions, travels
without the results tree, refuses tampering and misfit inputs, quarantines bad files and writes no identifier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from medxfer import bundle as bundles
from medxfer import paths
from medxfer.cache import image_files
from medxfer.config import load as load_config
from medxfer.predict import InputMismatchError, predict
from medxfer.selection import selection_auc

pytestmark = pytest.mark.workflow
BUNDLES = [("demo_mura", "indomain"), ("demo_mura", "scratch"), ("demo_ct", "indomain"), ("demo_ct", "scratch")]


def bundle_of(run_dir: Path, target: str, init: str) -> Path:
    return run_dir / "results" / paths.BUNDLE.format(target=target, init=init)


def test_test_split_files(run_dir: Path, target: str, out: Path) -> pd.DataFrame:
    """A prediction manifest of the target's test images (absolute paths), in manifest order, with their ids."""
    conf = load_config(run_dir / "config/config.yaml")
    dataset = dict(conf["datasets"][target])
    dataset |= {k: str(run_dir / dataset[k]) for k in ("root", "manifest", "masks") if k in dataset}
    manifest = pd.read_csv(run_dir / "results" / paths.MANIFEST.format(dataset=target), dtype=str)
    test = manifest[manifest["split"] == "test"]
    files = image_files(dataset, list(test["path"]))
    table = pd.DataFrame({"path": [str(f) for f in files], "image_id": test["image_id"].to_list()})
    table[["path"]].to_csv(out, index=False)
    return table


test_test_split_files.__test__ = False  # a helper, not a test


@pytest.mark.parametrize(("target", "init"), BUNDLES)
def test_predict_reproduces_the_workflows_test_predictions(run_dir, tmp_path, target, init):
    """Probabilities to 1e-6 and the same decisions as the chosen model's predictions.csv, image by image."""
    folder = bundle_of(run_dir, target, init)
    meta = json.loads((folder / bundles.META_FILE).read_text())
    ident = meta["identity"]
    wanted = test_test_split_files(run_dir, target, tmp_path / "test.csv")
    predict(folder, tmp_path / "test.csv", tmp_path / "out")
    ours = pd.read_csv(tmp_path / "out/predictions.csv")
    run = {"target": ident["target"], "init": ident["init"], "seed": ident["seed"]}
    if ident["classifier"] == "cnn":
        rel = paths.artifact("results", paths.MODEL, "predictions.csv", arch=ident["features"], **run)
    else:
        rel = paths.artifact(
            "results", paths.CLASSIFIER, "predictions.csv", features=ident["features"], clf=ident["classifier"], **run
        )
    theirs = pd.read_csv(run_dir / rel, dtype={"image_id": str}).set_index("image_id").loc[wanted["image_id"]]
    assert len(ours) == len(wanted) == len(theirs)
    classes = meta["classes"]
    for name in classes:
        np.testing.assert_allclose(ours[f"prob_{name}"], theirs[f"prob_{name}"], atol=1e-6)
    assert ours["decision"].to_list() == [classes[int(k)] for k in theirs["prediction"]]
    studies = pd.read_csv(tmp_path / "out/studies.csv")
    assert studies["images"].sum() == len(ours)


@pytest.mark.parametrize(("target", "init"), BUNDLES)
def test_bundle_holds_the_model_chosen_on_validation_data(run_dir, target, init):
    """The highest val AUC among the run's CNN heads and fused classifiers (the headline's candidates)."""
    meta = json.loads((bundle_of(run_dir, target, init) / bundles.META_FILE).read_text())
    scores = []
    for path in (run_dir / "results").glob(f"*/{target}/{init}/seed0/**/metrics.json"):
        metrics = json.loads(path.read_text())
        if bundles.headline_candidate(metrics["identity"]):
            scores.append(selection_auc(metrics))
    assert len(scores) == 2 + 4  # two CNNs, four classifiers on the fused features
    assert meta["chosen_by"]["val_auc"] == pytest.approx(np.nanmax(scores))
    card = (bundle_of(run_dir, target, init) / bundles.CARD_FILE).read_text()
    for section in ("## Intended use", "## Not for", "## Test results", "## Calibration", "## Robustness"):
        assert section in card
    assert f"n={meta['metrics']['test']['image']['n']}" in card


def test_a_copied_bundle_predicts_the_same_and_a_tampered_one_is_refused(run_dir, tmp_path):
    folder = bundle_of(run_dir, "demo_ct", "indomain")
    test_test_split_files(run_dir, "demo_ct", tmp_path / "test.csv")
    copy = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(folder, copy)
    predict(folder, tmp_path / "test.csv", tmp_path / "a")
    predict(copy, tmp_path / "test.csv", tmp_path / "b")
    for name in ("predictions.csv", "studies.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    weights = next(copy.rglob("model.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="altered"):
        bundles.load(copy)


def test_bad_files_are_quarantined_and_no_identifier_is_written(run_dir, tmp_path):
    """A CT folder named after a patient, with a readable slice full of identifiers, a corrupt DICOM and a note."""
    source = next((run_dir / "data/demo/ct").rglob("*.dcm"))
    folder = tmp_path / "in" / "DOE^JOHN"
    folder.mkdir(parents=True)
    ds = pydicom.dcmread(source)
    secrets = {"DOE^JOHN", "MRN-0042", "1.2.826.0.1.3680043.8.498.4242", "Springfield General"}
    ds.PatientName, ds.PatientID, ds.InstitutionName = "DOE^JOHN", "MRN-0042", "Springfield General"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
    ds.save_as(folder / "slice1.dcm")
    (folder / "slice2.dcm").write_bytes(source.read_bytes()[:400])  # preamble and header start, then nothing
    (folder / "notes.txt").write_text("DOE^JOHN MRN-0042")
    record = predict(bundle_of(run_dir, "demo_ct", "indomain"), tmp_path / "in", tmp_path / "out")
    assert record["predicted"] == 1 and record["quarantined"] == 2
    quarantine = pd.read_csv(tmp_path / "out/quarantine.csv")
    assert len(quarantine) == 2 and quarantine["reason"].str.len().min() > 10
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="ignore")
            assert not any(s in text for s in secrets), path
    ours = pd.read_csv(tmp_path / "out/predictions.csv")
    assert ours["path"].str.startswith("file-").all()


def test_an_input_that_does_not_fit_the_bundle_stops_before_writing(run_dir, tmp_path):
    mura_image = next((run_dir / "data/demo/mura/valid").rglob("*.png"))
    ct_slice = next((run_dir / "data/demo/ct").rglob("*.dcm"))
    with pytest.raises(InputMismatchError, match=r"1 channel\(s\).*needs 2"):
        predict(bundle_of(run_dir, "demo_ct", "scratch"), mura_image, tmp_path / "a")
    with pytest.raises(InputMismatchError, match="DICOM Modality CT"):
        predict(bundle_of(run_dir, "demo_mura", "scratch"), ct_slice, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_predict_rule_runs_the_configured_bundle_with_heatmaps(run_dir):
    out = run_dir / "results" / paths.PREDICTIONS.format(prediction="mura_valid")
    images = sorted((run_dir / "data/demo/mura/valid").rglob("*.png"))
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == len(images) and set(table["decision"]) <= {"negative", "positive"}
    assert len(list((out / "heatmaps").glob("*.png"))) == 2
    record = json.loads((out / "predict.json").read_text())
    assert record["bundle"]["identity"]["init"] == "indomain"


@pytest.mark.parametrize("target", ["demo_mura", "demo_ct"])
def test_onnx_export_predicts_what_torch_predicts(run_dir, tmp_path, target):
    """onnxruntime on CPU agrees with PyTorch to 1e-4 in probability on the test images, with the same decisions."""
    pytest.importorskip("onnxruntime")
    from medxfer.onnx_export import export_onnx

    copy = tmp_path / "bundle"
    shutil.copytree(bundle_of(run_dir, target, "indomain"), copy)
    written = export_onnx(copy)
    meta = bundles.verify(copy)  # the new files are listed with their digests
    assert [p.name for p in written] == [f"{arch}.onnx" for arch in meta["predictor"]["cnns"]]
    test_test_split_files(run_dir, target, tmp_path / "test.csv")
    predict(copy, tmp_path / "test.csv", tmp_path / "torch")
    record = predict(copy, tmp_path / "test.csv", tmp_path / "onnx", runtime="onnx")
    assert record["runtime"] == "onnx"
    ours, theirs = (pd.read_csv(tmp_path / run / "predictions.csv") for run in ("onnx", "torch"))
    columns = [f"prob_{c}" for c in meta["classes"]]
    assert np.abs(ours[columns].to_numpy() - theirs[columns].to_numpy()).max() <= 1e-4
    assert ours["decision"].to_list() == theirs["decision"].to_list()
