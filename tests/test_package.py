"""The library as users install it: a wheel (not the checkout) validates configs from its own schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(tmp_path: Path) -> Path:
    """A wheel built from a copy of the project files, so the build leaves nothing in the checkout."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, source],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("medxfer-*.whl")
    return wheel


def fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A new venv holding only the wheel; third-party packages come from this test's environment (a .pth file)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel],
        check=True,
        capture_output=True,
    )
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # after the venv's own site-packages: the wheel's medxfer comes first, the checkout's editable path last
    (Path(purelib) / "deps.pth").write_text(f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    return python


def test_wheel_in_a_fresh_venv_validates_configs_without_the_workflow_tools(tmp_path):
    python = fresh_venv(tmp_path, build_wheel(tmp_path))
    bad = tmp_path / "bad.yaml"
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    bad.write_text(yaml.safe_dump(config | {"explain": {"n_images": 0}}))
    probe = f"""
import sys
import medxfer, medxfer.config
assert medxfer.__file__.startswith({str(tmp_path / "venv")!r}), medxfer.__file__
conf = medxfer.config.load({str(ROOT / "config/config.yaml")!r})
defaults = {{name: medxfer.config.section_defaults(name) for name in ("fusion", "explain")}}
assert conf["fusion"] == defaults["fusion"]  # a section config.yaml leaves out: the schema's defaults only
assert conf["explain"]["n_images"] == defaults["explain"]["n_images"] >= 1  # filled in beside the keys it sets
try:
    medxfer.config.load({str(bad)!r})
except medxfer.config.ConfigError as err:
    assert "explain.n_images" in str(err), err
else:
    raise AssertionError("an invalid config passed")
print(sorted(m for m in ("snakemake", "dvc", "torch") if m in sys.modules))
"""
    done = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[]"  # validating a config needs neither the workflow tools nor torch
    cli = subprocess.run(
        [python, "-m", "medxfer.cli", "validate-config", ROOT / "config/config.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0 and "n_images" in cli.stdout, cli.stderr
