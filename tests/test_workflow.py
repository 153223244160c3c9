"""The real Snakefile on a tiny config, end to end, in a temp dir."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import result_identity, tiny_workdir
from PIL import Image

from medxfer import models

pytestmark = pytest.mark.workflow
REPO = Path(__file__).resolve().parents[1]
# run_dir (the tiny workflow, run once per session) and snakemake are fixtures in conftest.py


def test_second_run_has_nothing_to_do(run_dir, snakemake):
    result = snakemake(run_dir, "--cores", "2", "--dry-run")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def planned_jobs(workdir: Path, snakemake, *args: str) -> list[dict]:
    """Every job of a dry run from nothing: rule, input, output, wildcards and priority as Snakemake prints them."""
    result = snakemake(workdir, "--dry-run", "--forceall", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs: list[dict] = []
    for line in result.stdout.splitlines():
        header = re.match(r"^(?:local)?rule (\w+):$", line)
        if header:
            jobs.append({"rule": header[1], "input": [], "output": [], "wildcards": {}, "priority": 0})
        elif jobs and (field := re.match(r"^    (input|output|wildcards|priority): (.*)$", line)):
            key, value = field[1], field[2]
            if key == "priority":
                jobs[-1][key] = int(value)
            elif key == "wildcards":
                jobs[-1][key] = dict(pair.split("=", 1) for pair in value.split(", "))
            else:
                jobs[-1][key] = value.split(", ")
    return jobs


def test_everything_pretraining_needs_is_scheduled_before_fine_tuning(tmp_path_factory, snakemake):
    """Snakemake gives a rule's priority to its jobs only, not to their inputs: each job upstream of pretrain_model
    must carry that priority itself, or the in-domain runs become a chain at the end of the run."""
    jobs = planned_jobs(tiny_workdir(tmp_path_factory, "priorities"), snakemake)
    producer = {path: job for job in jobs for path in job["output"]}
    pretrain = [job for job in jobs if job["rule"] == "pretrain_model"]
    assert pretrain
    pretrain_priority = min(job["priority"] for job in pretrain)
    assert pretrain_priority > max(job["priority"] for job in jobs if job["rule"] == "finetune_model")
    upstream, todo = [], [path for job in pretrain for path in job["input"]]
    while todo:
        if (job := producer.get(todo.pop())) is not None and job not in upstream:
            upstream.append(job)
            todo.extend(job["input"])
    assert {"ingest_dataset", "cache_images"} <= {job["rule"] for job in upstream}
    late = [job["rule"] for job in upstream if job["priority"] < pretrain_priority]
    assert not late, f"jobs upstream of pretraining with a lower priority: {late}"


def test_the_first_seed_is_trained_before_the_others(tmp_path_factory, snakemake):
    """Its models and classifiers feed the heatmaps and the robustness sweep: its chain goes a step ahead of the other
    seeds' (after pretraining and the heatmaps), so those long jobs do not start last with one core idle."""
    workdir = tiny_workdir(tmp_path_factory, "seed-priorities")
    seeds = workdir / "config" / "seeds.yaml"
    seeds.write_text("finetune:\n  seeds: [3, 1]\n")
    jobs = planned_jobs(workdir, snakemake, "--configfile", str(workdir / "config" / "config.yaml"), str(seeds))
    chain = ("finetune_model", "extract_features", "train_classifiers")
    by_seed = {
        seed: {job["priority"] for job in jobs if job["rule"] in chain and job["wildcards"]["seed"] == seed}
        for seed in ("3", "1")
    }
    assert len(by_seed["3"]) == len(by_seed["1"]) == 1 and min(by_seed["3"]) > max(by_seed["1"])
    later = {job["priority"] for job in jobs if job["rule"] in ("pretrain_model", "explain_model")}
    assert min(later) > max(by_seed["3"])


def test_config_sets_threads_per_rule(run_dir):
    """tiny.yaml gives finetune_model 1 thread; pretraining keeps its default of 8, capped at --cores 2. Each log
    names the CPU kernels torch picked, so a wall time can be told apart from a slower host."""
    finetune_logs = sorted((run_dir / "results/logs/finetune_model").rglob("*.log"))
    pretrain_logs = sorted((run_dir / "results/logs/pretrain_model").rglob("*.log"))
    assert len(finetune_logs) == 2 * 2 * 2 and pretrain_logs
    kernels = f"{torch.backends.cpu.get_cpu_capability()} kernels) with"
    assert all(f"{kernels} 1 threads" in log.read_text() for log in finetune_logs)
    assert all(f"{kernels} 2 threads" in log.read_text() for log in pretrain_logs)


def test_finished_training_jobs_leave_no_resume_tree(run_dir):
    """Every pretraining and fine-tuning job removed its per-epoch state and the folders that held it."""
    assert list((run_dir / "results/finetune").rglob("metrics.json"))
    assert not (run_dir / "results/resume").exists()


def test_checkpoints_load_and_describe_themselves(run_dir):
    checkpoints = sorted((run_dir / "results").glob("*/*/*/model.json")) + sorted(
        (run_dir / "results").glob("finetune/*/*/*/*/model.json")
    )
    assert len(checkpoints) == 2 + 2 * 2 * 2
    for meta_path in checkpoints:
        model, meta = models.load(meta_path.parent)
        assert meta["arch"] in ("resnet10t", "resnet18")
        assert meta["input_size"][0] == meta["in_chans"] and len(meta["data_sha256"]) == 64
        assert model.num_classes == len(meta["classes"])
    ct_meta = json.loads((run_dir / "results/finetune/demo_ct/indomain/seed0/resnet10t/model.json").read_text())
    assert ct_meta["in_chans"] == 2 and ct_meta["classes"] == ["normal", "lesion"]


def test_feature_matrices_have_expected_shapes(run_dir):
    manifest = pd.read_csv(run_dir / "results/datasets/demo_mura/manifest.csv")
    counts = manifest["split"].value_counts()
    dims = {"resnet10t": 512, "resnet18": 512}
    for arch, dim in dims.items():
        data = np.load(run_dir / f"results/features/demo_mura/indomain/seed0/{arch}.npz")
        for split in ("train", "val", "test"):
            assert data[f"X_{split}"].shape == (counts[split], dim)
            assert np.isfinite(data[f"X_{split}"]).all()
    fused = np.load(run_dir / "results/fused/demo_mura/indomain/seed0/features.npz")
    assert fused["X_train"].shape == (counts["train"], sum(dims.values()))


def test_metrics_are_valid_probabilities(run_dir):
    files = list((run_dir / "results").glob("classify/*/*/*/*/*/metrics.json"))
    assert len(files) == 2 * 2 * 3 * 4
    for path in files + list((run_dir / "results").glob("finetune/*/*/*/*/metrics.json")):
        metrics = json.loads(path.read_text())
        for key in ("accuracy", "f1", "balanced_accuracy"):
            assert 0.0 <= metrics[key] <= 1.0, (path, key)
        assert -1.0 <= metrics["cohen_kappa"] <= 1.0
        assert math.isnan(metrics["roc_auc"]) or 0.0 <= metrics["roc_auc"] <= 1.0


def test_summary_compares_inits_features_and_classifiers(run_dir):
    summary = pd.read_csv(run_dir / "results/report/summary.csv")
    assert set(summary["init"]) == {"scratch", "indomain"}
    assert set(summary["features"]) == {"resnet10t", "resnet18", "fused"}
    assert set(summary["classifier"]) == {"cnn", "logreg", "svm", "random_forest", "knn"}
    assert len(summary) == 2 * 2 * 2 + 2 * 2 * 3 * 4
    assert summary.groupby("target")["best"].any().all()
    table = (run_dir / "results/report/summary.md").read_text()
    assert "## demo_mura" in table and "## demo_ct" in table and "cohen_kappa" in table
    nested = json.loads((run_dir / "results/report/metrics.json").read_text())
    assert 0 <= nested["demo_ct"]["indomain"]["fused"]["svm"]["accuracy"] <= 1
    # each CNN's test calibration before and after its temperature (fitted on val); classifiers have none
    cnn = summary["classifier"] == "cnn"
    assert summary.loc[cnn, ["temperature", "ece", "ece_scaled", "brier", "brier_scaled"]].notna().all().all()
    assert summary.loc[~cnn, "temperature"].isna().all() and (summary.loc[cnn, "temperature"] > 0).all()
    assert "Calibration of the CNNs on test" in table
    for model in (run_dir / "results/finetune").glob("*/*/*/*"):
        with Image.open(model / "reliability.png") as img:
            assert img.size[0] > 200


def test_decisions_use_thresholds_chosen_on_validation_data(run_dir):
    """tiny.yaml sets decision.threshold: each binary model records the cut-off it chose and applies it on test."""
    results = run_dir / "results"
    for path in [*results.glob("finetune/*/*/*/*/metrics.json"), *results.glob("classify/*/*/*/*/*/metrics.json")]:
        metrics = json.loads(path.read_text())
        assert metrics["decision"]["rule"] == "balanced_accuracy", path
        threshold = metrics["decision"]["threshold"]
        if threshold is None:  # too few validation cases of a class to choose on: argmax, and it says why
            assert "skipped" in metrics["decision"], path
            continue
        predictions = pd.read_csv(path.with_name("predictions.csv"))
        positive = [c for c in predictions.columns if c.startswith("prob_")][1]
        assert (predictions["prediction"] == (predictions[positive] >= threshold).astype(int)).all(), path


def test_cnns_and_classifiers_write_one_predictions_layout(run_dir):
    results = run_dir / "results"
    for target in ("demo_mura", "demo_ct"):
        paths = [
            *results.glob(f"finetune/{target}/*/*/*/predictions.csv"),
            *results.glob(f"classify/{target}/*/*/*/*/predictions.csv"),
        ]
        layouts = {tuple(pd.read_csv(path, nrows=0).columns) for path in paths}
        assert len(paths) > 8 and len(layouts) == 1, (target, layouts)
        assert next(iter(layouts))[:5] == ("image_id", "study_id", "label", "probability", "prediction")


def test_benchmark_table_covers_every_row_with_its_costs(run_dir):
    bench = pd.read_csv(run_dir / "results/report/benchmark.csv")
    assert len(bench) == 2 * 2 * 2 + 2 * 2 * 3 * 4 and set(bench["seeds"]) == {1}
    cnn = bench[bench["classifier"] == "cnn"]
    assert (cnn["parameters"] > 0).all() and (cnn["train_seconds"] > 0).all()
    fused = bench[bench["features"] == "fused"]
    per_run = cnn.groupby(["target", "init"])["parameters"].sum()  # the fusion uses every CNN of its run
    for record in fused.to_dict("records"):
        assert record["parameters"] == per_run[record["target"], record["init"]]
    text = (run_dir / "results/report/benchmark.md").read_text()
    assert "## demo_mura" in text and "## demo_ct" in text
    copies = "test images are copies, exact, resized or re-encoded, of an image in the train and val splits of the"
    assert f"{copies} in-domain pretraining" in text
    assert "Inits compared on equal budget" in text


def test_heatmaps_open_and_show_every_method(run_dir):
    pngs = 0
    for index_path in (run_dir / "results/explain").glob("*/*/*/*/index.csv"):
        index = pd.read_csv(index_path)
        assert 1 <= len(index) <= 4 and index["outcome"].isin(["TP", "FP", "FN", "TN"]).all()
        for method in ("gradcam", "gradcampp", "lime"):
            for rel in index[f"{method}_png"]:
                with Image.open(index_path.parent / rel) as img:
                    assert img.mode == "RGB" and img.size[0] == 2 * (img.size[1] - 16)
                pngs += 1
        heat = np.load(index_path.parent / "heatmaps.npz")
        assert heat["gradcam"].shape == (len(index), 64, 64)
        assert 0 <= heat["gradcampp"].min() <= heat["gradcampp"].max() <= 1
        assert (index_path.parent / "gallery.png").is_file()
    assert pngs >= 8 * 3 * 2


def test_faithfulness_is_measured_against_masks_and_a_random_map(run_dir):
    means = pd.read_csv(run_dir / "results/report/faithfulness_summary.csv")
    methods = {"gradcam", "gradcampp", "lime", "random", "centre", "chosen_on_val"}
    assert methods <= set(means["method"]) <= methods | {"trusted_on_val"}
    assert set(means["target"]) == {"demo_mura", "demo_ct"}
    assert (means["n_masked"] == means["n_images"]).all()  # demo data: scored images all show a masked finding
    scores = ("pointing_hit", "pointing_hit_tol", "energy_in_box", "iou", "pixel_auc", "deletion_auc")
    for column in (*scores, "blurred_deletion_auc"):
        assert means[column].between(0, 1).all(), column
    per_model = pd.read_csv(run_dir / "results/report/faithfulness.csv")
    every = per_model[per_model["subset"] == "all"]
    assert len(every) == 8 * 5 and every["n_images"].between(1, 4).all()
    # the findings each model detects are scored apart: a subset of its masked images, the same for every method
    detected = per_model[per_model["subset"] == "detected"]
    assert set(per_model["subset"]) <= {"all", "detected"} and (detected["n_masked"] == detected["n_images"]).all()
    merged = detected.merge(every, on=["target", "init", "arch", "method"], suffixes=("", "_all"))
    assert len(merged) == len(detected) and (merged["n_images"] <= merged["n_images_all"]).all()
    methods = per_model.loc[~per_model["method"].isin(["random", "centre"])]
    assert methods[["beats_baselines_deletion_auc", "beats_baselines_blurred_deletion_auc"]].notna().all().all()
    # a target's verdict: each model's method chosen on val, pooled
    chosen = every[every["chosen"].astype(bool)]
    verdict = means[(means["method"] == "chosen_on_val") & (means["subset"] == "all")].set_index("target")
    for target, rows in chosen.groupby("target"):
        assert verdict.loc[target, "n_images"] == rows["n_images"].sum()
        pooled = (rows["deletion_auc"] * rows["n_images"]).sum() / rows["n_images"].sum()
        assert verdict.loc[target, "deletion_auc"] == pytest.approx(pooled, abs=2e-3)
        assert pd.notna(verdict.loc[target, "beats_baselines_deletion_auc"])
    # the trusted row: only the models whose chosen map beat the random map on val
    trusted = means[(means["method"] == "trusted_on_val") & (means["subset"] == "all")].set_index("target")
    for target, rows in chosen.groupby("target"):
        kept = rows[rows["beats_random_on_val"].astype(bool)]
        assert (target in trusted.index) == (len(kept) > 0)
        if len(kept):
            assert trusted.loc[target, "n_images"] == kept["n_images"].sum()


def test_robustness_tables_cover_perturbations_models_and_severities(run_dir):
    for target, kinds in (("demo_mura", 6), ("demo_ct", 7)):
        for init in ("scratch", "indomain"):
            table = pd.read_csv(run_dir / f"results/robustness/{target}/{init}/seed0/robustness.csv")
            models_seen = set(table["model"])
            assert {"resnet10t", "resnet18"} < models_seen and len(models_seen) == 3
            fused = (models_seen - {"resnet10t", "resnet18"}).pop()
            assert fused.startswith("fused/")
            assert table["perturbation"].nunique() == 1 + kinds and set(table["severity"]) == {0, 1, 3}
            assert table[["accuracy"]].stack().between(0, 1).all()
            # the clean row reproduces the CNN's own test accuracy from fine-tuning
            clean = table[(table["perturbation"] == "none") & (table["model"] == "resnet18")]["accuracy"].item()
            own = json.loads((run_dir / f"results/finetune/{target}/{init}/seed0/resnet18/metrics.json").read_text())
            assert clean == pytest.approx(own["accuracy"], abs=1e-3)
            with Image.open(run_dir / f"results/robustness/{target}/{init}/seed0/robustness.png") as img:
                assert img.size[0] > 600


def test_no_identifying_dicom_fields_in_results(run_dir):
    labels = pd.read_csv(run_dir / "data/demo/ct/labels.csv")
    secrets = set(labels["patient_id"]) | {"Demo^"}
    for path in (run_dir / "results").rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".json", ".md", ".log"):
            text = path.read_text(errors="ignore")
            assert not any(s in text for s in secrets), path


def test_run_json_records_every_job_with_its_machine_and_costs(run_dir):
    """report/run.json is written by the run itself: one timing record per job (every log ends with one), the rules'
    thread counts, the machine and the versions; a run from nothing says so."""
    from medxfer.runrecord import read_job_records

    record = json.loads((run_dir / "results/report/run.json").read_text())
    logs = list((run_dir / "results/logs").rglob("*.log"))
    assert record["jobs"] == len(logs) == len(read_job_records(run_dir / "results"))
    assert record["complete"] and record["failed_jobs"] == 0 and record["cores"] == 2
    rules = record["rules"]
    assert rules["finetune_model"]["jobs"] == 2 * 2 * 2 and record["torch_threads"]["finetune_model"] == [1]
    assert record["torch_threads"]["pretrain_model"] == [2]  # default 8, capped at --cores 2
    assert sum(r["jobs"] for r in rules.values()) == record["jobs"]
    assert record["wall_s"] <= record["job_s"] + 1  # two cores: jobs overlap, never more wall than job time
    assert record["packages"]["torch"] == torch.__version__.split("+")[0]
    assert record["machine"]["torch_cpu_capability"] == [torch.backends.cpu.get_cpu_capability()]
    assert record["configfiles"] and len(record["config_sha256"]) == 64


def test_benchmark_docs_are_written_from_the_runs_own_records(run_dir, tmp_path):
    """`medxfer benchmark-docs` turns a finished run into docs/benchmarks.md and the README's table; the committed
    docs have the form the generator writes today (regenerate with `make benchmark`)."""
    from medxfer.benchmarkdoc import TABLE_END, TABLE_START, form
    from medxfer.cli import main

    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    out = tmp_path / "benchmarks.md"
    assert main(["benchmark-docs", str(run_dir / "results"), "--output", str(out), "--readme", str(readme)]) == 0
    run = json.loads((run_dir / "results/report/run.json").read_text())
    text = out.read_text()
    assert f"at commit {run['commit'][:10]}" in text and f"{run['jobs']} jobs" in text
    assert "### demo_mura" in text and "### demo_ct" in text  # the run's own benchmark.md, one level down
    table = readme.read_text().split(TABLE_START)[1].split(TABLE_END)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert {row.split(" | ")[1] for row in rows} == {"demo_mura", "demo_ct"} and len(rows) == 4  # CNN + fused each
    committed = (REPO / "docs/benchmarks.md").read_text()
    assert form(text) <= form(committed), "docs/benchmarks.md is not in the generator's form: run `make benchmark`"
    assert committed.count("\nRun of `") == committed.count("\n## ") >= 1


def cli_redo(run_dir: Path, out: Path, stage: str, *args: str) -> dict[str, Path]:
    """`medxfer <stage>` with the run's config and a job's wildcards, into `out`; its files by path under `out`."""
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}
    where = [str(out)] if stage in ("ingest", "cache") else ["--out", str(out)]  # a data set's folder; a results one
    command = [sys.executable, "-m", "medxfer.cli", stage, "config/config.yaml", *args, *where]
    done = subprocess.run(command, cwd=run_dir, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return {str(p.relative_to(out)): p for p in sorted(out.rglob("*")) if p.is_file()}


def assert_same_bytes(ours: dict[str, Path], results: Path, skip: tuple[str, ...] = ()) -> None:
    """Each file the command wrote equals the job's file at the same place, but those named in `skip`."""
    for rel, path in ours.items():
        if not rel.endswith(skip):
            assert path.read_bytes() == (results / rel).read_bytes(), rel


def test_cli_redoes_the_ingest_and_cache_jobs(run_dir, tmp_path):
    """Same manifest, quarantine and duplicates tables, the same pseudonymised masks and the same decoded cache
    (here of the CT set's DICOM)."""
    results = run_dir / "results/datasets/demo_ct"
    ingested = cli_redo(run_dir, tmp_path, "ingest", "demo_ct")
    others = ("images_64.npy", "source_overlap.json")  # the jobs of rules cache_images and check_source_overlap
    job_files = [str(p.relative_to(results)) for p in results.rglob("*") if p.is_file() and p.name not in others]
    assert sorted(ingested) == sorted(job_files) and "manifest.csv" in ingested and "masks" in str(job_files)
    assert_same_bytes(ingested, results, skip=("manifest.csv",))
    manifest = ingested["manifest.csv"].read_text().replace(str(tmp_path), "results/datasets/demo_ct")
    assert manifest == (results / "manifest.csv").read_text()  # it names each mask where ingest wrote it
    cached = cli_redo(run_dir, tmp_path, "cache", "demo_ct")
    assert sorted(cached) == sorted([*job_files, "images_64.npy"])
    assert cached["images_64.npy"].read_bytes() == (results / "images_64.npy").read_bytes()


def test_cli_redoes_a_pretrain_job(run_dir, tmp_path):
    """Same checkpoint as the workflow's job (2 threads: tiny.yaml's default 8, capped at --cores 2); log.csv's epoch
    times aside. Nothing else is left under --out: the job removes its resume state."""
    ours = cli_redo(run_dir, tmp_path, "pretrain", "--arch", "resnet10t", "--threads", "2")
    rel = "pretrain/demo_xray_source/resnet10t"
    assert sorted(ours) == [f"{rel}/{name}" for name in ("log.csv", "model.json", "model.safetensors")]
    assert_same_bytes(ours, run_dir / "results", skip=("log.csv",))
    logs = [
        pd.read_csv(path).drop(columns="seconds")
        for path in (ours[f"{rel}/log.csv"], run_dir / "results" / rel / "log.csv")
    ]
    pd.testing.assert_frame_equal(*logs)


def test_cli_redoes_a_finetune_job(run_dir, tmp_path):
    """Same weights, metadata, metrics and predictions as the workflow's job; log.csv's epoch times aside."""
    ours = cli_redo(
        run_dir, tmp_path, "finetune", "--target", "demo_ct", "--init", "indomain", "--seed", "0", "--arch", "resnet10t"
    )
    results, rel = run_dir / "results", "finetune/demo_ct/indomain/seed0/resnet10t"
    assert sorted(ours) == sorted(str(p.relative_to(results)) for p in (results / rel).iterdir())
    assert_same_bytes(ours, results, skip=("log.csv",))
    logs = [pd.read_csv(path).drop(columns="seconds") for path in (ours[f"{rel}/log.csv"], results / rel / "log.csv")]
    pd.testing.assert_frame_equal(*logs)


def test_cli_redoes_an_extract_features_job(run_dir, tmp_path):
    """Same feature files and fusion; fusion.json names the files it read and wrote, so it names them under --out.
    A skops file is stamped with object ids and the time, so the fitted transforms are compared by their output."""
    from medxfer.fusion import load_feature_file, load_fusion

    ours = cli_redo(run_dir, tmp_path, "extract", "--target", "demo_mura", "--init", "scratch", "--seed", "0")
    results, run = run_dir / "results", "demo_mura/scratch/seed0"
    assert sorted(ours) == [
        f"features/{run}/resnet10t.npz",
        f"features/{run}/resnet18.npz",
        f"fused/{run}/features.npz",
        f"fused/{run}/fusion.json",
        f"fused/{run}/fusion.skops",
    ]
    assert_same_bytes(ours, results, skip=("fusion.json", "fusion.skops"))
    report = ours[f"fused/{run}/fusion.json"].read_text().replace(str(tmp_path), "results")
    assert report == (results / f"fused/{run}/fusion.json").read_text()
    files = [load_feature_file(results / f"features/{run}/{arch}.npz") for arch in ("resnet10t", "resnet18")]
    blocks = [data["X_test"].astype(np.float64) for data in files]  # as fuse_features reads them
    theirs = load_fusion(results / f"fused/{run}/fusion.skops").transform(blocks)
    np.testing.assert_array_equal(load_fusion(ours[f"fused/{run}/fusion.skops"]).transform(blocks), theirs)
    fused_test = load_feature_file(results / f"fused/{run}/features.npz")["X_test"]
    np.testing.assert_array_equal(theirs.astype(np.float32), fused_test)  # the saved transform made the fused file


def test_cli_redoes_a_train_classifiers_job(run_dir, tmp_path):
    """Every classifier on every feature set of a run: the same files, plots included. A skops file names its zip
    members by object id and stamps them with the time, so models are compared by what they predict."""
    from medxfer.classifiers import load_classifier
    from medxfer.fusion import load_feature_file

    ours = cli_redo(run_dir, tmp_path, "classify", "--target", "demo_mura", "--init", "scratch", "--seed", "0")
    results, run = run_dir / "results", "demo_mura/scratch/seed0"
    assert sorted(ours) == sorted(str(p.relative_to(results)) for p in (results / "classify" / run).rglob("*.*"))
    assert_same_bytes(ours, results, skip=("model.skops",))
    for rel in (r for r in ours if r.endswith("model.skops")):
        features = Path(rel).parent.parent.name
        npz = results / (f"fused/{run}/features.npz" if features == "fused" else f"features/{run}/{features}.npz")
        x_test = load_feature_file(npz)["X_test"]
        ours_proba = load_classifier(ours[rel]).predict_proba(x_test)
        np.testing.assert_array_equal(ours_proba, load_classifier(results / rel).predict_proba(x_test), err_msg=rel)


def test_cli_redoes_an_explain_model_job(run_dir, tmp_path):
    """Same overlays, heatmaps, index, gallery and selection, byte for byte; the same faithfulness tables but for
    each method's measured seconds per image."""
    args = ("--target", "demo_mura", "--init", "scratch", "--seed", "0", "--arch", "resnet18")
    ours = cli_redo(run_dir, tmp_path, "explain", *args)
    results = run_dir / "results"
    wrote = [
        *(results / "explain/demo_mura/scratch/seed0/resnet18").rglob("*.*"),
        results / "faithfulness/demo_mura/scratch/seed0/resnet18.csv",
    ]
    job_files = [str(p.relative_to(results)) for p in wrote if p.name != ".snakemake_timestamp"]  # Snakemake's own
    assert sorted(ours) == sorted(job_files)
    assert_same_bytes(ours, results, skip=(".csv",))
    for rel in (r for r in ours if r.endswith(".csv")):
        timing = ["seconds_per_image"]
        ours_csv, job_csv = (pd.read_csv(p).drop(columns=timing, errors="ignore") for p in (ours[rel], results / rel))
        pd.testing.assert_frame_equal(ours_csv, job_csv, check_exact=True, obj=rel)


def test_heatmap_settings_benchmark_scores_as_the_workflow_does(run_dir):
    """benchmarks/heatmap_localisation.py on the run's test split, with the run's own explain settings, gives the
    workflow's faithfulness means for LIME and both baselines; a changed setting gives other maps."""
    script = REPO / "benchmarks/heatmap_localisation.py"
    model = ("--target", "demo_mura", "--init", "scratch", "--seed", "0", "--arch", "resnet18", "--threads", "1")
    variants = ("lime", "lime:lime_fill=mean,lime_segments=20")
    command = [sys.executable, str(script), "results", *variants, *model, "--split", "test"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=run_dir)  # paths as the run's
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads(result.stdout)["variants"]
    job = pd.read_csv(run_dir / "results/faithfulness/demo_mura/scratch/seed0/resnet18.csv")
    columns = ["pointing_hit_tol", "energy_in_box", "pixel_auc", "deletion_auc", "blurred_deletion_auc"]
    means = job.groupby("method")[columns].mean()
    for method in ("lime", "random", "centre"):
        for column in columns:
            assert scored[method]["means"][column] == pytest.approx(means.loc[method, column], abs=1e-4), (
                method,
                column,
            )
    changed = scored["lime:lime_fill=mean,lime_segments=20"]["means"]
    assert any(changed[c] != pytest.approx(scored["lime"]["means"][c], abs=1e-4) for c in columns)
    assert "energy_in_box_minus_centre" in scored["lime"] and "pointing_hit_tol_minus_random" in scored["lime"]


def test_cli_redoes_an_assess_robustness_job(run_dir, tmp_path):
    """The same perturbed-test table and plot as the workflow's job (CT: the HU-window shift reads the raw DICOM)."""
    ours = cli_redo(run_dir, tmp_path, "robustness", "--target", "demo_ct", "--init", "indomain", "--seed", "0")
    rel = "robustness/demo_ct/indomain/seed0"
    assert sorted(ours) == [f"{rel}/robustness.csv", f"{rel}/robustness.png"]
    assert_same_bytes(ours, run_dir / "results")


def test_cli_redoes_an_export_bundle_job(run_dir, tmp_path):
    """The same bundle, file for file (weights and classifier copies, the card), but the refitted fusion: a skops
    file stamps its members with the time, so it (and its digest in bundle.json) is compared by its fitted values."""
    from medxfer.classifiers import load_sklearn_objects

    ours = cli_redo(run_dir, tmp_path, "export-bundle", "--target", "demo_ct", "--init", "indomain")
    results, rel = run_dir / "results", "bundles/demo_ct/indomain"
    theirs = [str(p.relative_to(results)) for p in (results / rel).rglob("[!.]*") if p.is_file()]  # not Snakemake's
    assert sorted(ours) == sorted([*theirs, f"{rel}.json"])
    assert_same_bytes(ours, results, skip=("fusion.skops", "bundle.json", f"{rel}.json"))
    metas = [json.loads(p.read_text()) for p in (ours[f"{rel}/bundle.json"], results / rel / "bundle.json")]
    for meta in metas:
        meta["files"].pop("fusion.skops", None)
    assert metas[0] == metas[1]
    if f"{rel}/fusion.skops" in ours:
        fusions = [load_sklearn_objects(p) for p in (ours[f"{rel}/fusion.skops"], results / rel / "fusion.skops")]
        for ours_scaler, their_scaler in zip(fusions[0]["scalers"], fusions[1]["scalers"], strict=True):
            np.testing.assert_array_equal(ours_scaler.mean_, their_scaler.mean_)
            np.testing.assert_array_equal(ours_scaler.scale_, their_scaler.scale_)
        for key in ("kept", "pca"):
            assert (fusions[0][key] is None) == (fusions[1][key] is None)
        if fusions[0]["pca"] is not None:
            np.testing.assert_array_equal(fusions[0]["pca"].components_, fusions[1]["pca"].components_)


def test_cli_redoes_the_checks_curves_and_summaries(run_dir, tmp_path):
    """check_source_overlap, plot_training_curves, summarize_results and summarize_faithfulness: the same files."""
    ours = {}
    for stage, args in (
        ("check-overlap", ["--target", "demo_ct"]),
        ("curves", ["--target", "demo_mura"]),
        ("summarize", []),
        ("summarize-faithfulness", []),
    ):
        ours |= cli_redo(run_dir, tmp_path, stage, *args)
    report = run_dir / "results/report"
    tables = [str(p.relative_to(run_dir / "results")) for p in report.glob("*.*") if p.name != "run.json"]
    expected = [*tables, "report/training/demo_mura.png", "datasets/demo_ct/source_overlap.json"]
    assert sorted(ours) == sorted(expected)
    assert_same_bytes(ours, run_dir / "results")


def test_every_result_carries_its_identity(run_dir):
    """What the summary reads instead of folder names: each result's own metadata names it."""
    results = run_dir / "results"
    metrics = [*(results / "finetune").rglob("metrics.json"), *(results / "classify").rglob("metrics.json")]
    assert len(metrics) == 2 * 2 * 2 + 2 * 2 * 3 * 4  # targets x inits x (archs + feature sets x classifiers)
    for path in metrics:
        rel = str(path.parent.relative_to(results))
        assert json.loads(path.read_text())["identity"] == result_identity(rel)["identity"], rel
    for path in (results / "finetune").rglob("model.json"):
        assert (
            models.read_meta(path.parent)["identity"]
            == result_identity(str(path.parent.relative_to(results)))["identity"]
        )
    for path in [*(results / "features").rglob("*.npz"), *(results / "fused").rglob("*.npz")]:
        stage, target, run = path.relative_to(results).parts[:3]
        with np.load(path) as data:
            ident = json.loads(str(data["identity"]))
        features = "fused" if stage == "fused" else path.stem
        assert (ident["target"], ident["run"], ident["features"]) == (target, run, features), path
    faithfulness = pd.read_csv(next((results / "faithfulness").rglob("*.csv")))
    assert {"target", "init", "arch"} <= set(faithfulness.columns)
