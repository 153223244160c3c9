"""`snakemake --report` on the tiny workflow run: the HTML report builds, holds every section, and renders."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_snakemake

pytestmark = pytest.mark.workflow

SECTIONS = ("Summary", "ROC curves", "Confusion matrices", "Heatmaps", "Robustness", "Training curves")


@pytest.fixture(scope="module")
def report_html(run_dir: Path) -> Path:
    result = run_snakemake(run_dir, "--report", "results/report.html")
    if result.returncode != 0:
        pytest.fail(f"snakemake --report failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return run_dir / "results" / "report.html"


def test_report_holds_every_section_and_result(report_html):
    html = report_html.read_text()
    for section in SECTIONS:
        assert f'"{section}"' in html, section
    for name in ("summary.html", "faithfulness.png", "gallery.png", "roc.png", "confusion.png", "robustness.png"):
        assert name in html, name
    assert html.count('"filename": "gallery.png"') == 8  # one gallery per fine-tuned model
    assert "Heatmap faithfulness" in html and "Summary table (test split)" in html


def _chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail(
            "chromium not found: the report test renders the page in Debian's chromium (apt-get install -y chromium)"
        )
    return browser


def _render(browser: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    command += [f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def test_rendered_report_shows_the_summary_table(report_html, tmp_path):
    browser = _chromium()
    result = _render(browser, report_html, tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    # only what the report's JS app put on the page, not the data it carries in <script> blocks
    dom = re.sub(r"<script.*?</script>", "", result.stdout, flags=re.S)
    caption = re.search(r"<caption>Summary table \(test split\)</caption>(.*?)</table>", dom, re.S)
    assert caption, "the summary table is not in the rendered page"
    rows = re.findall(r"<tr>", caption.group(1))
    assert len(rows) >= 1 + 2 * 2 * 2  # header + (best CNN, best fused) per target and init
    assert "CNN" in caption.group(1) and "on fused features" in caption.group(1) and "demo_ct" in caption.group(1)
    assert re.search(r"<caption>Faithfulness by target and method.*?gradcampp.*?random", dom, re.S)
    shot = tmp_path / "report.png"
    result = _render(browser, report_html, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,1600")
    assert result.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000, result.stderr[-2000:]
    keep = report_html.with_suffix(".png")
    shutil.copy(shot, keep)  # for a look by eye next to the report
