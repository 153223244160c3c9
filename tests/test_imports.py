"""What each kind of job imports: a job pays for every heavy import at start-up, so nothing loads what it never uses."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(code: str) -> set[str]:
    """Modules in sys.modules (top-level packages and dotted names) after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize(
    ("code", "absent"),
    [
        # classifier jobs: skops' trusted-type walk would import torch through sklearn's array-API shim
        ("import medxfer.classify, medxfer.classifiers as c; c.skops_io()", {"torch", "timm", "matplotlib"}),
        # the Snakefile's onsuccess handler and the cost command
        ("import medxfer.runrecord, medxfer.benchmarkdoc", {"torch", "sklearn", "skops"}),
        # feature extraction needs no training code, sklearn or plotting
        ("import medxfer.features", {"sklearn", "skops", "matplotlib"}),
        # plotting and the selection rule: matplotlib only once a figure is drawn, never torch
        ("import medxfer.plots, medxfer.selection", {"torch", "matplotlib"}),
        # every job's script and the rules' job specs: a stage imports its own library only when it runs
        ("import medxfer.stages, medxfer.jobs", {"torch", "sklearn", "timm", "PIL", "matplotlib"}),
        # what every DAG build imports (a no-op `snakemake` stays short)
        ("import medxfer.config, medxfer.fingerprint, medxfer.runrecord", {"torch", "sklearn", "timm", "PIL"}),
        # the pipeline stages never load the demo-data generators
        ("import medxfer.ingest, medxfer.cache, medxfer.train, medxfer.features, medxfer.classify", {"medxfer.demo"}),
    ],
)
def test_jobs_import_only_what_they_use(code, absent):
    assert not loaded_after(code) & absent


def test_saved_classifiers_load_in_a_job_that_never_imported_torch(tmp_path):
    code = f"""
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
import medxfer.classifiers as c
x, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
model = Pipeline([("clf", LogisticRegression())]).fit(x, y)
c.skops_io().dump(model, {str(tmp_path / "m.skops")!r})
loaded = c.load_classifier({str(tmp_path / "m.skops")!r})
assert (loaded.predict_proba(x) == model.predict_proba(x)).all()
"""
    assert "torch" not in loaded_after(code)
