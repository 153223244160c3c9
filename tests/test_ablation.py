"""Ablation tables from runs' own records: the choice comes from the recorded configs, the pick from val AUC."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medxfer.ablation import ablation_markdown, config_changes, run_config, write_ablation_docs
from medxfer.benchmarkdoc import load_run
from medxfer.io import read_json, write_json


def test_config_changes_name_every_changed_key_and_nothing_else() -> None:
    base = {"results": "a", "finetune": {"epochs": 4, "archs": ["x"]}, "fusion": {"pca_components": None}}
    variant = copy.deepcopy(base) | {"results": "b", "report": {"notes": {"t": "a note"}}}
    assert config_changes(base, variant) == []  # where a run writes, and what its documents say, is not a choice
    variant["finetune"]["epochs"] = 8
    variant["finetune"]["archs"] = ["x", "y"]
    variant["classify"] = {"pca_components": 64}
    assert config_changes(base, variant) == [
        "classify.pca_components: — → `64`",
        "finetune.archs: `['x']` → `['x', 'y']`",
        "finetune.epochs: `4` → `8`",
    ]


def test_config_changes_leave_out_pretraining_settings_only_where_neither_run_pretrains() -> None:
    base = {"finetune": {"inits": ["imagenet"]}, "pretrain": {"init": "scratch", "epochs": 6}}
    variant = copy.deepcopy(base)
    variant["pretrain"]["init"] = "imagenet"
    assert config_changes(base, variant) == []  # neither run pretrains: the setting changed nothing
    variant["finetune"]["inits"] = ["indomain"]
    assert config_changes(base, variant) == [
        "finetune.inits: `['imagenet']` → `['indomain']`",
        "pretrain.init: `scratch` → `imagenet`",
    ]
    assert config_changes(variant, base) == [
        "finetune.inits: `['indomain']` → `['imagenet']`",
        "pretrain.init: `imagenet` → `scratch`",
    ]


def _variant(base: Path, out: Path, change: dict, val_auc_of_worst_test: float) -> Path:
    """A copy of a finished run's records whose config changes `change` (dotted key -> value) and whose table gives
    the row with the lowest test AUC of each target the highest val AUC."""
    shutil.copytree(base / "report", out / "report")
    record = read_json(out / "report" / "run.json")
    for key, value in change.items():
        *parents, leaf = key.split(".")
        node = record["config"]
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    write_json(out / "report" / "run.json", record)
    table = pd.read_csv(out / "report" / "benchmark.csv")
    for _, rows in table.groupby("target"):
        table.loc[rows["roc_auc"].idxmin(), "selection_auc"] = val_auc_of_worst_test
    table.to_csv(out / "report" / "benchmark.csv", index=False)
    return out


@pytest.mark.workflow
def test_ablation_table_from_the_workflows_records(run_dir: Path, tmp_path: Path) -> None:
    """The tiny run's own run.json and benchmark.csv as the base; a variant whose records change one setting."""
    base = load_run(run_dir / "results")
    config = run_config(base)  # the workflow records its validated config
    assert config["finetune"]["epochs"] >= 1 and config["results"] == "results"
    variant_dir = _variant(run_dir / "results", tmp_path / "more-epochs", {"finetune.epochs": 99}, 2.0)
    markdown = ablation_markdown([(base, [load_run(variant_dir)])])
    targets = list(dict.fromkeys(base.table["target"]))
    assert [line[3:] for line in markdown.splitlines() if line.startswith("## ")] == [*targets, "Runs"]
    variant_rows = [line for line in markdown.splitlines() if line.startswith("| more-epochs |")]
    assert len(variant_rows) == len(targets)
    for line, target in zip(variant_rows, targets, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == f"finetune.epochs: `{config['finetune']['epochs']}` → `99`"
        rows = base.table[base.table["target"] == target]
        worst = rows.loc[rows["roc_auc"].idxmin()]  # picked for its val AUC, though its test AUC is the lowest
        assert cells[2] == f"{worst['init']} / {worst['features']} / {worst['classifier']}"
        assert cells[4] == "2.000"
        best_val = rows.sort_values("selection_auc", ascending=False, kind="stable").iloc[0]
        assert float(cells[-3]) == pytest.approx(worst["roc_auc"] - best_val["roc_auc"], abs=1.5e-3)


@pytest.mark.workflow
def test_a_key_added_since_a_run_counts_as_its_default_not_as_a_change(run_dir: Path, tmp_path: Path) -> None:
    """A base recorded before `finetune.tta` existed ran without it: a variant that records the default changes
    nothing, one that sets it changes that key alone."""
    base = _variant(run_dir / "results", tmp_path / "old-base", {}, 2.0)
    record = read_json(base / "report" / "run.json")
    record["config"]["finetune"].pop("tta", None)
    write_json(base / "report" / "run.json", record)
    same = _variant(run_dir / "results", tmp_path / "same", {"finetune.tta": False}, 2.0)
    tta = _variant(run_dir / "results", tmp_path / "tta", {"finetune.tta": True}, 2.0)
    old = run_config(load_run(base))
    assert config_changes(old, run_config(load_run(same))) == []
    assert config_changes(old, run_config(load_run(tta))) == ["finetune.tta: `False` → `True`"]


@pytest.mark.workflow
def test_a_run_without_a_recorded_config_is_refused(run_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(run_dir / "results" / "report", tmp_path / "old" / "report")
    record = read_json(tmp_path / "old" / "report" / "run.json")
    del record["config"]
    write_json(tmp_path / "old" / "report" / "run.json", record)
    with pytest.raises(ValueError, match=r"old: report/run.json records no config"):
        ablation_markdown([(load_run(run_dir / "results"), [load_run(tmp_path / "old")])])


def _graded(run: Path) -> Path:
    """The run's records as if its targets were ordinal: its benchmark.csv gains the graded metrics' columns."""
    table = pd.read_csv(run / "report" / "benchmark.csv")
    for metric in ("quadratic_kappa", "mean_absolute_error"):
        table[metric], table[f"{metric}_sd"] = table["cohen_kappa"], 0.01
    table.to_csv(run / "report" / "benchmark.csv", index=False)
    return run


@pytest.mark.workflow
def test_a_graded_target_adds_qwk_and_mae_columns(run_dir: Path, tmp_path: Path) -> None:
    base = load_run(_graded(_variant(run_dir / "results", tmp_path / "graded", {}, 2.0)))
    plain = ablation_markdown([(load_run(run_dir / "results"), [])])
    graded = ablation_markdown([(base, [])])
    assert "| QWK | MAE |" in graded and "QWK" not in plain


@pytest.mark.workflow
def test_the_committed_ablation_page_has_the_generators_form(run_dir: Path, tmp_path: Path) -> None:
    """docs/ablations.md is written by `make ablation`; a generator change without a fresh page fails here. Its
    studies include a graded target (QWK and MAE columns) beside binary ones."""
    committed = (Path(__file__).resolve().parents[1] / "docs" / "ablations.md").read_text()
    variant = _variant(run_dir / "results", tmp_path / "variant", {"finetune.epochs": 99}, 2.0)
    graded = _graded(_variant(run_dir / "results", tmp_path / "graded", {}, 2.0))
    graded_variant = _graded(_variant(run_dir / "results", tmp_path / "graded-variant", {"finetune.head": "x"}, 2.0))
    studies = [(load_run(run_dir / "results"), [load_run(variant)]), (load_run(graded), [load_run(graded_variant)])]
    fresh = ablation_markdown(studies)

    def form(markdown: str) -> set[str]:
        return {line for line in markdown.splitlines() if line.startswith(("Generated by", "| run |", "## Runs"))}

    assert form(committed) == form(fresh)


@pytest.mark.workflow
def test_each_study_compares_its_variants_with_its_own_base(run_dir: Path, tmp_path: Path) -> None:
    """Two studies on one page: a row's change is against its own study's base, and every run is listed once."""
    first = _variant(run_dir / "results", tmp_path / "study-a" / "base", {}, 2.0)
    second = _variant(run_dir / "results", tmp_path / "study-b" / "base", {"finetune.epochs": 7}, 2.0)
    a_variant = _variant(run_dir / "results", tmp_path / "study-a" / "wider", {"finetune.batch_size": 3}, 2.0)
    b_variant = _variant(run_dir / "results", tmp_path / "study-b" / "longer", {"finetune.epochs": 9}, 2.0)
    out = tmp_path / "ablations.md"
    write_ablation_docs([[first, a_variant], [second, b_variant]], out)
    lines = out.read_text().splitlines()
    b_rows = [line for line in lines if line.startswith("| longer |")]
    assert b_rows and all("finetune.epochs: `7` → `9`" in line for line in b_rows)
    a_rows = [line for line in lines if line.startswith("| wider |")]
    assert a_rows and all("`3`" in line and "epochs" not in line for line in a_rows)
    listed = [line.split("**")[1] for line in lines if line.startswith("- **")]
    assert listed == ["study-a/base", "study-a/wider", "study-b/base", "study-b/longer"]
    with pytest.raises(ValueError, match="needs a base run and at least one variant"):
        write_ablation_docs([[first]], out)
