import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def medxfer(*args):
    return subprocess.run([sys.executable, "-m", "medxfer.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_validate_config_prints_defaults():  # lime_segments: a schema default config.yaml leaves unset
    result = medxfer("validate-config", "config/config.yaml")
    assert result.returncode == 0 and '"lime_segments": 50' in result.stdout


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {a: {format: mura, root: x}}\nfinetune: {targets: [a], inits: [scratch], epochs: 0}\n")
    result = medxfer("validate-config", str(bad))
    assert result.returncode == 1
    assert "finetune.epochs" in result.stderr and str(bad) in result.stderr


def test_synthesize_then_ingest_through_the_cli(tmp_path):
    assert medxfer("synthesize", "mura", str(tmp_path / "mura"), "--n", "8").returncode == 0
    config = tmp_path / "c.yaml"
    config.write_text(
        f"datasets: {{m: {{format: mura, root: {tmp_path / 'mura'}}}}}\nfinetune: {{targets: [m], inits: [scratch]}}\n"
    )
    result = medxfer("ingest", str(config), "m", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "manifest.csv").read_text().count("\n") > 8


def test_a_stage_command_names_a_target_the_config_does_not_have():
    result = medxfer("classify", "config/config.yaml", "--target", "nope", "--init", "scratch")
    assert result.returncode == 1
    assert "config/config.yaml: 'nope' is not under finetune.targets" in result.stderr
