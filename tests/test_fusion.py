"""Feature fusion: shapes, train-only statistics, alignment by id, and clear errors for mismatched inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medxfer.fusion import SPLITS, fuse_features, load_fusion
from medxfer.io import read_json, save_npz
from medxfer.sections import FusionSection

CLASSES = np.array(["normal", "finding"])
N = {"train": 40, "val": 16, "test": 16}


def section(**values: object) -> FusionSection:
    """A `fusion` config section: the schema's defaults but for `values`."""
    return FusionSection.from_config(values)


def _labels_and_ids() -> dict[str, np.ndarray]:
    """Shared labels/ids (as the extraction stage writes them for every model of one target)."""
    out: dict[str, np.ndarray] = {}
    for split, n in N.items():
        out[f"y_{split}"] = (np.arange(n) % 2).astype(np.int64)
        out[f"ids_{split}"] = np.array([f"{split}-{i:03d}" for i in range(n)])
    return out


def _write(path: Path, dim: int, seed: int, scale: float = 1.0, shift: float = 0.0, **extra: np.ndarray) -> Path:
    """A feature file with class-dependent Gaussian features; val/test are shifted so their stats differ from train."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"classes": CLASSES, **_labels_and_ids()}
    for split in SPLITS:
        y = arrays[f"y_{split}"]
        offset = 0.0 if split == "train" else 0.7
        x = rng.normal(size=(y.size, dim)) + 2.0 * y[:, None] + offset
        arrays[f"X_{split}"] = (x * scale + shift).astype(np.float32)
    arrays.update(extra)
    save_npz(path, **arrays)
    return path


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _shuffled(src: Path, dst: Path, seed: int) -> Path:
    """Same content as `src`, rows permuted within each split."""
    data = _load(src)
    rng = np.random.default_rng(seed)
    for split in SPLITS:
        order = rng.permutation(data[f"y_{split}"].size)
        for key in ("X", "y", "ids"):
            data[f"{key}_{split}"] = data[f"{key}_{split}"][order]
    save_npz(dst, **data)
    return dst


def test_fused_shapes_and_report(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.npz", dim=5, seed=1)
    b = _write(tmp_path / "b.npz", dim=3, seed=2, scale=100.0, shift=50.0)
    out, report_path = tmp_path / "fused" / "features.npz", tmp_path / "fused" / "report.json"
    report = fuse_features([a, b], out, report_path, section(), seed=0)
    fused = _load(out)
    for split in SPLITS:
        assert fused[f"X_{split}"].shape == (N[split], 8)
        assert fused[f"X_{split}"].dtype == np.float32
        assert fused[f"y_{split}"].dtype == np.int64
        np.testing.assert_array_equal(fused[f"ids_{split}"], _load(a)[f"ids_{split}"])
    np.testing.assert_array_equal(fused["classes"], CLASSES)
    assert report == read_json(report_path)
    assert [m["dim"] for m in report["models"]] == [5, 3]
    assert report["inputs"] == [str(a), str(b)]
    assert report["fused_dim"] == 8
    assert report["n"] == N
    assert report["pca"] == {"used": False}
    assert not any(p.name.endswith(".tmp") or ".tmp." in p.name for p in out.parent.iterdir())


def test_standardisation_uses_train_statistics_only(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.npz", dim=4, seed=1)
    b = _write(tmp_path / "b.npz", dim=3, seed=2, scale=100.0, shift=50.0)
    fuse_features([a, b], tmp_path / "f.npz", tmp_path / "r.json", section(), seed=0)
    fused = _load(tmp_path / "f.npz")
    x_train, x_test = fused["X_train"].astype(np.float64), fused["X_test"].astype(np.float64)
    np.testing.assert_allclose(x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=0), 1.0, atol=1e-5)
    assert np.all(np.abs(x_test.mean(axis=0)) > 0.05)  # test rows are shifted: not re-centred on their own stats
    raw = _load(b)
    mean, std = raw["X_train"].astype(np.float64).mean(axis=0), raw["X_train"].astype(np.float64).std(axis=0)
    np.testing.assert_allclose(x_test[:, 4:], (raw["X_test"] - mean) / std, rtol=1e-4, atol=1e-4)


def test_rows_are_aligned_by_id(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.npz", dim=4, seed=1)
    b = _write(tmp_path / "b.npz", dim=3, seed=2)
    b_shuffled = _shuffled(b, tmp_path / "b_shuffled.npz", seed=3)
    fuse_features([a, b], tmp_path / "ref.npz", tmp_path / "ref.json", section(), seed=0)
    fuse_features([a, b_shuffled], tmp_path / "shuf.npz", tmp_path / "shuf.json", section(), seed=0)
    ref, shuf = _load(tmp_path / "ref.npz"), _load(tmp_path / "shuf.npz")
    for split in SPLITS:
        np.testing.assert_array_equal(shuf[f"ids_{split}"], ref[f"ids_{split}"])
        np.testing.assert_array_equal(shuf[f"y_{split}"], ref[f"y_{split}"])
        np.testing.assert_allclose(shuf[f"X_{split}"], ref[f"X_{split}"], atol=1e-5)


def test_unstandardised_fusion_is_plain_concatenation(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.npz", dim=2, seed=1)
    b = _shuffled(_write(tmp_path / "b.npz", dim=3, seed=2), tmp_path / "b_shuffled.npz", seed=4)
    fuse_features([a, b], tmp_path / "f.npz", tmp_path / "r.json", section(standardize=False), seed=0)
    fused, raw_a, raw_b = _load(tmp_path / "f.npz"), _load(a), _load(b)
    lookup = {image_id: row for row, image_id in enumerate(raw_b["ids_val"])}
    order = [lookup[image_id] for image_id in raw_a["ids_val"]]
    np.testing.assert_array_equal(fused["X_val"], np.concatenate([raw_a["X_val"], raw_b["X_val"][order]], axis=1))


def test_mismatched_ids_raise(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.npz", dim=2, seed=1)
    ids = _labels_and_ids()["ids_test"].copy()
    ids[0] = "stranger"
    b = _write(tmp_path / "b.npz", dim=2, seed=2, ids_test=ids)
    with pytest.raises(ValueError, match=r"b\.npz.*'test' ids differ.*stranger"):
        fuse_features([a, b], tmp_path / "f.npz", tmp_path / "r.json", section(), seed=0)
    assert not (tmp_path / "f.npz").exists()


def test_mismatched_labels_classes_and_nonfinite_raise(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.npz", dim=2, seed=1)
    y = _labels_and_ids()["y_val"].copy()
    y[3] = 1 - y[3]
    bad_label = _write(tmp_path / "bad_label.npz", dim=2, seed=2, y_val=y)
    with pytest.raises(ValueError, match=r"bad_label\.npz.*'val' labels differ.*val-003"):
        fuse_features([a, bad_label], tmp_path / "f.npz", tmp_path / "r.json", section(), seed=0)
    bad_classes = _write(tmp_path / "bad_classes.npz", dim=2, seed=2, classes=np.array(["normal", "other"]))
    with pytest.raises(ValueError, match=r"bad_classes\.npz.*classes"):
        fuse_features([a, bad_classes], tmp_path / "f.npz", tmp_path / "r.json", section(), seed=0)
    data = _load(a)
    data["X_train"][2, 1] = np.nan
    save_npz(tmp_path / "nan.npz", **data)
    with pytest.raises(ValueError, match=r"nan\.npz.*non-finite"):
        fuse_features([tmp_path / "nan.npz"], tmp_path / "f.npz", tmp_path / "r.json", section(), seed=0)


def test_pca_output_dimension(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.npz", dim=6, seed=1)
    b = _write(tmp_path / "b.npz", dim=4, seed=2)
    report = fuse_features([a, b], tmp_path / "f.npz", tmp_path / "r.json", section(pca_components=3), seed=0)
    fused = _load(tmp_path / "f.npz")
    assert all(fused[f"X_{split}"].shape == (N[split], 3) for split in SPLITS)
    assert report["pca"]["used"] and report["pca"]["n_components"] == 3 and report["fused_dim"] == 3
    assert 0.0 < report["pca"]["explained_variance_ratio"] < 1.0
    np.testing.assert_allclose(fused["X_train"].mean(axis=0), 0.0, atol=1e-4)

    report = fuse_features([a, b], tmp_path / "g.npz", tmp_path / "s.json", section(pca_components=0.9), seed=0)
    assert 1 <= report["fused_dim"] <= 10
    assert report["pca"]["explained_variance_ratio"] >= 0.9
    with pytest.raises(ValueError, match="pca_components"):
        fuse_features([a, b], tmp_path / "h.npz", tmp_path / "t.json", section(pca_components=11), seed=0)


def test_study_ids_pass_through(tmp_path: Path) -> None:
    study = {f"study_{s}": np.array([f"st-{s}-{i // 2}" for i in range(n)]) for s, n in N.items()}
    a = _write(tmp_path / "a.npz", dim=2, seed=1, **study)
    b = _shuffled(_write(tmp_path / "b.npz", dim=2, seed=2, **study), tmp_path / "b_shuffled.npz", seed=5)
    report = fuse_features([a, b], tmp_path / "f.npz", tmp_path / "r.json", section(), seed=0)
    fused = _load(tmp_path / "f.npz")
    assert report["study_ids"]
    np.testing.assert_array_equal(fused["study_test"], study["study_test"])
    c = _write(tmp_path / "c.npz", dim=2, seed=3)
    assert not fuse_features([a, c], tmp_path / "g.npz", tmp_path / "s.json", section(), seed=0)["study_ids"]
    assert "study_train" not in _load(tmp_path / "g.npz")


def test_supervised_selection_keeps_the_informative_dims(tmp_path: Path) -> None:
    """Selection is fitted on train labels only; the kept columns are the class-dependent ones."""
    a = _write(tmp_path / "a.npz", dim=3, seed=1)
    rng = np.random.default_rng(0)
    noise = {f"X_{s}": rng.normal(size=(n, 5)).astype(np.float32) for s, n in N.items()}
    b = _write(tmp_path / "b.npz", dim=5, seed=2, **noise)  # pure noise, no class signal
    report = fuse_features([a, b], tmp_path / "f.npz", tmp_path / "r.json", section(select_k=3), seed=0)
    fused = _load(tmp_path / "f.npz")
    assert all(fused[f"X_{split}"].shape == (N[split], 3) for split in SPLITS)
    assert report["fused_dim"] == 3 and report["concat_dim"] == 8
    assert report["selection"] == {"used": True, "k": 3, "score": "anova_f", "kept_per_model": [3, 0]}
    fuse_features([a, b], tmp_path / "g.npz", tmp_path / "s.json", section(), seed=0)
    full = _load(tmp_path / "g.npz")
    np.testing.assert_array_equal(fused["X_test"], full["X_test"][:, :3])
    with pytest.raises(ValueError, match="either pca_components or select_k"):
        fuse_features([a, b], tmp_path / "h.npz", tmp_path / "t.json", section(select_k=2, pca_components=2), seed=0)
    with pytest.raises(ValueError, match=r"select_k=9 must be an int in 1\.\.8"):
        fuse_features([a, b], tmp_path / "h.npz", tmp_path / "t.json", section(select_k=9), seed=0)


@pytest.mark.parametrize("settings", [{}, {"pca_components": 4}, {"select_k": 5}, {"standardize": False}])
def test_saved_fusion_maps_new_rows_like_the_fused_file(tmp_path: Path, settings: dict) -> None:
    """Robustness checks and bundles push new images through the transform fuse_features saved: it must give the
    fused file's rows, whatever the second file's row order."""
    a = _write(tmp_path / "a.npz", dim=5, seed=1)
    b = _shuffled(_write(tmp_path / "b.npz", dim=3, seed=2, scale=100.0), tmp_path / "b_shuf.npz", seed=3)
    fuse_features([a, b], tmp_path / "f.npz", tmp_path / "r.json", section(**settings), 0, tmp_path / "t.skops")
    fused = _load(tmp_path / "f.npz")
    fusion = load_fusion(tmp_path / "t.skops")
    data_a, data_b = _load(a), _load(b)
    order = {str(i): k for k, i in enumerate(data_b["ids_test"])}
    rows_b = [order[str(i)] for i in data_a["ids_test"]]
    test = fusion.transform([data_a["X_test"], data_b["X_test"][rows_b]])
    np.testing.assert_allclose(test, fused["X_test"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="fitted on 2 models"):
        fusion.transform([data_a["X_test"]])
