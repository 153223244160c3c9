"""The workflow on a real SLURM cluster: a single node on this machine (tests/slurm/start-local-slurm.sh), the tiny
config submitted job by job through sbatch with profiles/slurm, and the same results as the local run.

Needs root and apt-get (it installs and starts munge, slurmctld, slurmd, MariaDB + slurmdbd) and an interpreter with
the `slurm` extra: MEDXFER_SLURM_PYTHON (`make test` builds .venv-slurm and sets it) or the one running pytest.
When SLURM cannot be brought up the test fails with the reason; `pytest -m "not slurm"` leaves it out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_snakemake, snakemake_command, tiny_workdir

from medxfer.resume import RESUME_FILE

PROFILE = REPO / "profiles" / "slurm"
START_SLURM = REPO / "tests" / "slurm" / "start-local-slurm.sh"
# accounting gives sacct's durable job records (state, exit code, allocated GPUs); fake GPUs make the GPU rules
# schedulable (their code runs on CPU: there is no device behind it). Two of them, so two GPU jobs run at once, as
# the local run's --cores 2 runs them: with one, every GPU rule waited for the one before (the run took twice as long).
CLUSTER_ENV = {"LOCAL_SLURM_ACCOUNTING": "1", "LOCAL_SLURM_GPUS": "2"}
# the local run's --cores 2 caps every rule at 2 threads; the same cap here gives the same torch threading
THREADS = 2
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/")
PROFILE_ENV = [
    "MEDXFER_SLURM_PARTITION",
    "MEDXFER_SLURM_GPU_PARTITION",
    "MEDXFER_SLURM_ACCOUNT",
    "MEDXFER_SLURM_GPU_MODEL",
    "MEDXFER_SLURM_CPU_ONLY",
]


def gpu_rules_in_workflow() -> set[str]:
    """The rules whose resources declare a GPU, read from workflow/rules/*.smk."""
    rules = set()
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", path.read_text(), flags=re.MULTILINE)[1:]:
            if re.search(r"^\s+gpu=", block, flags=re.MULTILINE):
                rules.add(block.split(":", 1)[0])
    return rules


def render_profile(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    """profiles/slurm/config.yaml as Snakemake reads it (YTE template) under the given environment."""
    from snakemake.profiles import ProfileConfigFileParser

    for name in PROFILE_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with open(PROFILE / "config.yaml") as stream:
        return dict(ProfileConfigFileParser().parse(stream))


def test_profile_gives_gpu_settings_to_the_gpu_rules_only(monkeypatch):
    gpu_rules = gpu_rules_in_workflow()
    assert {"finetune_model", "pretrain_model"} <= gpu_rules
    plain = render_profile(monkeypatch)
    assert plain["executor"] == "slurm" and plain["rerun-incomplete"] and int(plain["retries"]) >= 1
    assert "set-resources" not in plain  # no GPU type: each GPU rule's own `gpu=1` becomes --gpus=1
    assert not any(r.startswith(("slurm_", "gpu")) for r in plain["default-resources"])

    site = render_profile(
        monkeypatch,
        MEDXFER_SLURM_PARTITION="all",  # also a Python builtin: must stay the string
        MEDXFER_SLURM_GPU_PARTITION="gpu-a100",
        MEDXFER_SLURM_ACCOUNT="12345",
        MEDXFER_SLURM_GPU_MODEL="a100",
    )
    assert {"slurm_partition='all'", "slurm_account='12345'"} <= set(site["default-resources"])
    assert set(site["set-resources"]) == {f"{r}:gpu_model='a100'" for r in gpu_rules} | {
        f"{r}:slurm_partition='gpu-a100'" for r in gpu_rules
    }

    cpu_only = render_profile(monkeypatch, MEDXFER_SLURM_CPU_ONLY="1", MEDXFER_SLURM_GPU_MODEL="a100")
    assert set(cpu_only["set-resources"]) == {f"{r}:gpu=0" for r in gpu_rules}


def slurm_python() -> str:
    """The interpreter that runs snakemake with the SLURM plugin, checked without importing the plugin."""
    python = os.environ.get("MEDXFER_SLURM_PYTHON") or sys.executable
    probe = "import importlib.util as u; assert u.find_spec('snakemake_executor_plugin_slurm_jobstep')"
    probe += " and u.find_spec('snakemake_executor_plugin_slurm')"
    if subprocess.run([python, "-c", probe], capture_output=True).returncode != 0:
        pytest.fail(
            f"{python} has no SLURM executor plugin: `pip install -e '.[slurm]'` there, or set MEDXFER_SLURM_PYTHON "
            "to an interpreter that has it (`make test` does: .venv-slurm)"
        )
    return python


def controller_running() -> bool:
    """Whether a slurmctld runs here already (then it was started by someone else and stays up after the tests)."""
    try:
        pid = int(Path("/run/slurmctld.pid").read_text().strip())
        return Path(f"/proc/{pid}/comm").read_text().strip() == "slurmctld"
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def cluster():
    """A running single-node SLURM with accounting; stopped afterwards if this fixture started it."""
    if os.geteuid() != 0:
        pytest.fail("starting a local SLURM needs root (apt-get, daemons); `pytest -m 'not slurm'` leaves this out")
    was_running = controller_running()
    env = os.environ | CLUSTER_ENV
    result = subprocess.run(["bash", str(START_SLURM), "start"], env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"could not bring up SLURM with {START_SLURM.name}:\n{result.stderr[-4000:]}")
    yield
    if not was_running:
        subprocess.run(["bash", str(START_SLURM), "stop"], capture_output=True, timeout=300)


def submit_args() -> list[str]:
    """Through profiles/slurm, polled every 2 s (a cluster's profile waits 40 s) with the local run's thread cap."""
    args = ["--workflow-profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5"]
    return [*args, "--max-threads", str(THREADS)]


def sacct(job_ids: list[str], wait_s: float = 30) -> dict[str, dict[str, str]]:
    """sacct's record of each job, once all of them have reached a final state in the accounting database."""
    fields = ["JobID", "State", "ExitCode", "AllocTRES", "Start", "End"]
    cmd = ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), f"--format={','.join(fields)}"]
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
        records = {line.split("|")[0]: dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()}
        pending = [j for j in job_ids if records.get(j, {}).get("State") in (None, "PENDING", "RUNNING")]
        if not pending or time.monotonic() > deadline:
            return records
        time.sleep(1)


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory: pytest.TempPathFactory):
    workdir = tiny_workdir(tmp_path_factory, "slurm")
    start = time.monotonic()
    result = run_snakemake(workdir, *submit_args(), python=slurm_python(), timeout=3600)
    seconds = time.monotonic() - start
    print(json.dumps({"slurm_tiny_workflow_seconds": round(seconds, 1)}))
    if result.returncode != 0:
        pytest.fail(f"snakemake --executor slurm failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return workdir, result.stdout + result.stderr


@pytest.mark.slurm
def test_every_job_went_through_sbatch_and_gpus_only_where_declared(slurm_run):
    _, log = slurm_run
    submitted = {slurm_id: rule for _, slurm_id, rule in SUBMITTED.findall(log)}
    total = int(re.findall(r"(\d+) of (\d+) steps \(100%\) done", log)[-1][1])
    local = re.findall(r"^localrule (\w+):", log, flags=re.MULTILINE)
    assert local == ["all"]  # the target rule has nothing to run; every other job is a SLURM job
    assert len(submitted) == total - len(local) > 40
    records = sacct(list(submitted))
    assert set(records) == set(submitted)
    gpu_rules = gpu_rules_in_workflow()
    for slurm_id, rule in submitted.items():
        record = records[slurm_id]
        assert (record["State"], record["ExitCode"]) == ("COMPLETED", "0:0"), (rule, record)
        assert ("gres/gpu=1" in record["AllocTRES"]) == (rule in gpu_rules), (rule, record)
    assert {submitted[j] for j in submitted} >= gpu_rules | {"train_classifiers", "summarize_results"}


@pytest.mark.slurm
def test_results_equal_the_local_run(slurm_run, run_dir):
    workdir, _ = slurm_run
    local = sorted(p.relative_to(run_dir) for p in (run_dir / "results").rglob("metrics.json"))
    assert len(local) == 2 * 2 * 2 + 2 * 2 * 3 * 4 + 1  # finetune, classify, report
    for rel in local:
        assert (workdir / rel).read_text() == (run_dir / rel).read_text(), rel
    summary = "results/report/summary.csv"
    assert (workdir / summary).read_text() == (run_dir / summary).read_text()


@pytest.mark.slurm
def test_next_invocation_after_the_cluster_run_has_nothing_to_do(slurm_run):
    """The cluster run generated the demo data itself; its records (params evaluated before the data existed)
    must still match what the next invocation computes, locally or on the cluster."""
    workdir, _ = slurm_run
    for args in (["--cores", "2"], submit_args()):
        result = run_snakemake(workdir, *args, "--dry-run", python=slurm_python(), timeout=600)
        assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, (
            result.stdout + result.stderr
        )[-4000:]


@pytest.mark.slurm
def test_cpu_only_override_runs_a_gpu_rule_without_a_gpu(slurm_run, run_dir, monkeypatch):
    """MEDXFER_SLURM_CPU_ONLY=1: the same Snakefile on a cluster without GPUs; the GPU rule's job asks for none."""
    workdir, _ = slurm_run
    monkeypatch.setenv("MEDXFER_SLURM_CPU_ONLY", "1")
    target = "results/features/demo_mura/scratch/seed0/resnet10t.npz"
    args = [*submit_args(), target, "--forcerun", "extract_features"]  # --forcerun takes several values: last
    result = run_snakemake(workdir, *args, python=slurm_python(), timeout=1800)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    submitted = {rule: job_id for _, job_id, rule in SUBMITTED.findall(result.stdout + result.stderr)}
    assert set(submitted) == {"extract_features"}  # nothing upstream re-runs after the cluster run
    job_id = submitted["extract_features"]
    records = sacct(list(submitted.values()))
    assert all(r["State"] == "COMPLETED" for r in records.values()), records
    assert "gpu" not in records[job_id]["AllocTRES"]
    with (  # ids are object arrays; these files are this test's own
        np.load(workdir / target, allow_pickle=True) as ours,
        np.load(run_dir / target, allow_pickle=True) as local,
    ):
        assert sorted(ours.files) == sorted(local.files)
        for key in local.files:
            np.testing.assert_array_equal(ours[key], local[key])


def wait_for(what: str, probe, timeout_s: float = 600, poll_s: float = 0.2):
    """probe()'s first truthy value, polled every `poll_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while (value := probe()) is None or value is False:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
    return value


def resume_state(workdir: Path, model: str) -> Path:
    """The per-epoch resume state of a fine-tuning run (medxfer.jobs.resume_dir)."""
    return workdir / "results" / "resume" / "finetune" / model / RESUME_FILE


def run_and_cancel_training(workdir: Path, model: str, *args: str) -> tuple[int, str, str, int]:
    """Run snakemake and `scancel` the fine-tuning job of `model` (target/init/arch) once an epoch is complete.

    The job is suspended the moment its first resume state appears, so the cancel always lands mid-run, after a
    completed epoch. Returns the exit code, snakemake's output, the cancelled SLURM job id and the last epoch the
    cancelled job completed (read from its resume state).
    """
    train_log = workdir / f"results/logs/finetune_model/{model}.log"
    train_log.unlink(missing_ok=True)  # the earlier run's log already says "fine-tuning"
    state = resume_state(workdir, model)
    assert not state.exists(), f"{state}: left over from an earlier run"
    out_path = workdir / "submit.out"
    cmd = snakemake_command(workdir, *submit_args(), *args, python=slurm_python())
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:

            def submitted():
                found = [j for _, j, rule in SUBMITTED.findall(out_path.read_text()) if rule == "finetune_model"]
                return found[0] if found else None

            job_id = wait_for("the fine-tuning job's submission", submitted)
            wait_for("the first epoch's resume state", state.is_file, poll_s=0.02)
            subprocess.run(["scontrol", "suspend", job_id], check=True, timeout=60)
            completed = torch.load(state, map_location="cpu", weights_only=True)["epoch"]
            subprocess.run(["scancel", job_id], check=True, timeout=60)
            proc.wait(timeout=1800)
        finally:
            if proc.poll() is None:
                proc.kill()
    return proc.returncode, out_path.read_text(), job_id, completed


def assert_resumed_after(workdir: Path, model: str, completed: int) -> None:
    """The retry's log: it resumed after the cancelled job's last completed epoch and trained only the rest."""
    text = (workdir / f"results/logs/finetune_model/{model}.log").read_text()
    resumed = re.findall(r"resuming from \S+ after epoch (\d+)", text)
    assert resumed == [str(completed)], text[-3000:]
    after = text.split("resuming from", 1)[1]
    trained = [int(e) for e in re.findall(r"epoch (\d+)/\d+ train_loss", after)]
    assert trained and trained[0] == completed + 1, text[-3000:]


def finetune_jobs(log: str) -> list[str]:
    return [j for _, j, rule in SUBMITTED.findall(log) if rule == "finetune_model"]


def assert_valid_and_used_after_completion(workdir: Path, run_dir: Path, model: str, finetune_id: str, log: str):
    """The model is whole (same metrics as the local run) and feature extraction started only after it finished."""
    rel = f"results/finetune/{model}/metrics.json"
    assert (workdir / rel).read_text() == (run_dir / rel).read_text()
    extract = [j for _, j, rule in SUBMITTED.findall(log) if rule == "extract_features"]
    assert len(extract) == 1
    records = sacct([finetune_id, extract[0]])
    assert records[finetune_id]["State"] == records[extract[0]]["State"] == "COMPLETED"
    assert records[extract[0]]["Start"] >= records[finetune_id]["End"]  # ISO timestamps


@pytest.mark.slurm
def test_cancelled_training_job_is_resubmitted_and_completes(slurm_run, run_dir):
    """A training job killed on the cluster (scancel, as on preemption or a node failure) is retried in the same
    run (`retries:` in profiles/slurm) and costs at most its current epoch: the retry resumes after the last
    completed one, ends with the uninterrupted run's metrics, and downstream jobs only see its outputs."""
    workdir, _ = slurm_run
    model = "demo_ct/scratch/seed0/resnet10t"
    target = f"results/features/{model}.npz"
    # one model to train again, and the run's feature job after it (--forcerun would retrain every model it reads)
    shutil.rmtree(workdir / f"results/finetune/{model}")
    (workdir / target).unlink()
    code, log, cancelled, completed = run_and_cancel_training(workdir, model, target)
    assert code == 0, log[-4000:]
    jobs = finetune_jobs(log)
    assert jobs[0] == cancelled and len(jobs) == 2, jobs
    assert sacct([cancelled])[cancelled]["State"].startswith("CANCELLED")
    assert_resumed_after(workdir, model, completed)
    assert_valid_and_used_after_completion(workdir, run_dir, model, jobs[1], log)
    assert not resume_state(workdir, model).parent.exists()  # a finished run leaves no resume state


@pytest.mark.slurm
def test_rerun_after_a_failed_run_resumes_and_completes(slurm_run, run_dir):
    """Without retries the cancelled job fails the run; running the same command again redoes what is missing."""
    workdir, _ = slurm_run
    model = "demo_ct/scratch/seed0/resnet18"
    shutil.rmtree(workdir / f"results/finetune/{model}")  # one model to redo, and its features after it
    (workdir / f"results/features/{model}.npz").unlink()  # (a present target would not need the model)
    args = [f"results/features/{model}.npz", "--retries", "0"]
    code, log, cancelled, completed = run_and_cancel_training(workdir, model, *args)
    assert code != 0 and finetune_jobs(log) == [cancelled]
    assert not (workdir / f"results/finetune/{model}/model.safetensors").exists()  # nothing half-written stays
    assert sacct([cancelled])[cancelled]["State"].startswith("CANCELLED")

    result = run_snakemake(workdir, *submit_args(), *args, python=slurm_python(), timeout=1800)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    (finetune_id,) = finetune_jobs(log)
    assert_resumed_after(workdir, model, completed)
    assert_valid_and_used_after_completion(workdir, run_dir, model, finetune_id, log)
