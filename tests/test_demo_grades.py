"""Graded fracture demo set: layout, splits, masks, determinism, a visibly growing grade, ingest in grade order."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medxfer import cli, demo, paths
from medxfer.config import validate
from medxfer.demo import grades
from medxfer.ingest import ingest_dataset
from medxfer.io import sha256_file

SIZE, SEED, N = 64, 3, 16
HEADER = ["path", "label", "patient_id", "study_id", "split"]


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == HEADER
        return list(reader)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "L" and img.size == (SIZE, SIZE)
        return np.asarray(img)


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grades") / "grades"
    demo.synthesize_fracture_grades(out, N, SIZE, SEED)
    return out


def test_layout_ids_and_masks_empty_exactly_for_grade_intact(root: Path) -> None:
    rows = _rows(root)
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == {
        "labels.csv",
        *(r["path"] for r in rows),
        *(f"masks/{r['path']}" for r in rows),
    }  # nothing else, in particular no temp files
    study_grades: dict[str, set[str]] = defaultdict(set)
    patient_splits: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        m = re.fullmatch(r"images/patient(\d{5})/study([1-3])/image([1-3])\.png", row["path"])
        assert m, row["path"]
        assert row["patient_id"] == f"GRD{m.group(1)}" and row["study_id"] == f"GRD{m.group(1)}_study{m.group(2)}"
        study_grades[row["study_id"]].add(row["label"])
        patient_splits[row["patient_id"]].add(row["split"])
        _png(root / row["path"])
        mask = _png(root / "masks" / row["path"])
        assert set(np.unique(mask).tolist()) <= {0, 255}
        assert mask.any() == (row["label"] != "intact"), row
    assert len(patient_splits) == N and all(len(s) == 1 for s in patient_splits.values())  # patient-level splits
    assert all(len(g) == 1 for g in study_grades.values())  # every view of a study has the study's grade
    assert {g for gs in study_grades.values() for g in gs} == set(demo.FRACTURE_GRADES)


@pytest.mark.parametrize(("n", "seed"), [(grades.MIN_PATIENTS, 0), (grades.MIN_PATIENTS, 1), (13, 5), (40, 2)])
def test_every_split_holds_every_grade(tmp_path: Path, n: int, seed: int) -> None:
    demo.synthesize_fracture_grades(tmp_path / "g", n, 32, seed)
    table = pd.DataFrame(_rows(tmp_path / "g"))
    studies = table.drop_duplicates("study_id")
    counts = pd.crosstab(studies["split"], studies["label"])
    assert set(counts.index) == {"train", "val", "test"} and list(counts.columns.sort_values()) == sorted(
        demo.FRACTURE_GRADES
    )
    assert (counts >= 1).all().all() and (counts.max(axis=1) - counts.min(axis=1) <= 1).all(), counts  # balanced
    patients = table.drop_duplicates("patient_id")["split"].value_counts()
    n_eval = max(2, round(0.2 * n))
    assert (patients["val"], patients["test"], patients["train"]) == (n_eval, n_eval, n - 2 * n_eval)


def test_same_arguments_same_bytes_and_the_cli_runs_the_same_generator(tmp_path: Path, root: Path) -> None:
    demo.synthesize_fracture_grades(tmp_path / "again", N, SIZE, SEED)
    assert _digests(tmp_path / "again") == _digests(root)
    assert cli.main(["synthesize", "grades", str(tmp_path / "cli"), "--n", "8", "--size", "32", "--seed", "4"]) == 0
    demo.synthesize_fracture_grades(tmp_path / "direct", 8, 32, 4)
    assert _digests(tmp_path / "cli") == _digests(tmp_path / "direct")
    demo.synthesize_fracture_grades(tmp_path / "other", 8, 32, 5)
    assert (tmp_path / "other" / "labels.csv").read_bytes() != (tmp_path / "direct" / "labels.csv").read_bytes()
    assert tuple(demo.GENERATORS) == paths.DEMO_SETS  # one generator per demo set the workflow makes


def test_the_fracture_grows_with_the_grade(root: Path) -> None:
    """Each written view against the same view rendered without its fracture: the change grows with the grade."""
    plan = grades._plan(N, SEED)
    diff: dict[int, list[float]] = defaultdict(list)
    area: dict[int, list[float]] = defaultdict(list)
    for p in range(N):
        anatomy = grades._patient_anatomy(SEED, p + 1, plan.parts[p])
        for s in range(1, plan.n_studies[p] + 1):
            grade = plan.grades[(p, s - 1)]
            pose, fracture, n_views = grades._study(SEED, p + 1, s, anatomy, grade)
            for k in range(1, n_views + 1):
                rel = f"images/patient{p + 1:05d}/study{s}/image{k}.png"
                img, mask = _png(root / rel), _png(root / "masks" / rel)
                assert np.array_equal(img, grades._view(SEED, p + 1, s, k, SIZE, anatomy, pose, fracture)[0])
                intact, _ = grades._view(SEED, p + 1, s, k, SIZE, anatomy, pose, None)
                diff[grade].append(float(np.abs(img.astype(float) - intact).mean()))
                area[grade].append(float((mask > 0).mean()))
    assert max(diff[0]) == 0.0 and max(area[0]) == 0.0
    mean_diff = [np.mean(diff[g]) for g in range(len(demo.FRACTURE_GRADES))]
    mean_area = [np.mean(area[g]) for g in range(len(demo.FRACTURE_GRADES))]
    assert all(b > 1.5 * a for a, b in zip(mean_diff, mean_diff[1:], strict=False)), mean_diff
    assert all(b > a for a, b in zip(mean_area, mean_area[1:], strict=False)), mean_area
    # far grades are not confused: the most changed nondisplaced view changes less than the average severe one
    assert max(diff[1]) < mean_diff[3]


def test_ingests_with_labels_in_grade_order_and_splits_kept(root: Path, tmp_path: Path) -> None:
    entry = {
        "format": "csv",
        "root": str(root),
        "manifest": str(root / "labels.csv"),
        "masks": str(root / "masks"),
        "classes": list(demo.FRACTURE_GRADES),
        "max_reject_fraction": 0,
    }
    conf = validate({"datasets": {"grades": entry}, "finetune": {"targets": ["grades"], "inits": ["scratch"]}})
    table = ingest_dataset("grades", conf["datasets"]["grades"], tmp_path / "m.csv", tmp_path / "q.csv", seed=0)
    rows = pd.DataFrame(_rows(root))
    assert pd.read_csv(tmp_path / "q.csv").empty and len(table) == len(rows)
    assert table["label"].tolist() == [demo.FRACTURE_GRADES.index(name) for name in table["label_name"]]
    assert sorted(table["label"].unique()) == [0, 1, 2, 3]
    assert table["split"].tolist() == rows["split"].tolist()  # the manifest's splits, row for row
    assert table["label_name"].tolist() == rows["label"].tolist()
    assert (table["mask"] != "").all()


def test_too_few_patients_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="so val and test hold every grade"):
        demo.synthesize_fracture_grades(tmp_path / "g", grades.MIN_PATIENTS - 1, 32, 0)
    assert not (tmp_path / "g").exists()
