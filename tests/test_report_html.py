"""report.html rendered in headless Chromium (Debian's chromium, installed by .ci/run) at 1280 px, for a recorded
GPU sweep (tests/fixtures/h200-sweep, with a failed, a skipped and two unreadable runs added) and a recorded CPU
sweep (tests/fixtures/cpu-sweep): no horizontal scroll, the findings first, every legend entry and every system
on an axis a system's name; tables and figures render, with no script errors and no network."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from bench.analysis import report
from tests.test_report import sweep  # noqa: F401  (fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
CPU_SWEEP = Path(__file__).parent / "fixtures" / "cpu-sweep"
WIDTH = 1280

# What the page shows, measured by the browser after load and left on <body> for --dump-dom to carry back.
PROBE = """<script>addEventListener('load',()=>{const b=document.body,d=document.documentElement,
all=s=>[...document.querySelectorAll(s)],texts=s=>JSON.stringify(all(s).map(e=>e.textContent.trim()));
b.dataset.viewport=innerWidth;b.dataset.scrollWidth=d.scrollWidth;
b.dataset.firstSection=all('section')[0].id;b.dataset.firstHeading=all('h2')[0].textContent;
b.dataset.legend=texts('[id*="-legend-entry-"]');b.dataset.axisSystems=texts('[id*="-system-label-"]');
b.dataset.tables=all('table').length;b.dataset.figures=all('figure svg').length;
})</script>"""


def render(page: Path, profile: Path) -> tuple[dict[str, str], str]:
    """The probe's findings for `page` at 1280 px (read from a copy with the probe added), and Chromium's log."""
    probed = profile.parent / f"probed-{page.parent.name}.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--window-size={WIDTH},1000", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", proc.stdout).group(1)
    return {k: html.unescape(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', body)}, proc.stderr


@pytest.fixture
def cpu_sweep(tmp_path):
    d = tmp_path / "cpu-sweep"
    shutil.copytree(CPU_SWEEP, d)
    return d


@pytest.fixture(params=["h200", "cpu"])
def rendered(request, tmp_path):
    """A report built from a recorded sweep, as Chromium shows it, with the sweep's runs.csv."""
    d = request.getfixturevalue("sweep" if request.param == "h200" else "cpu_sweep")
    report.build(d)
    shown, log = render(d / "report.html", tmp_path / "profile")
    return shown, log, pd.read_csv(d / "runs.csv")


def test_the_page_fits_1280_px_without_horizontal_scroll(rendered):
    shown, _, _ = rendered
    assert int(shown["viewport"]) == WIDTH and int(shown["scroll-width"]) <= WIDTH


def test_the_findings_are_the_first_section(rendered):
    shown, _, _ = rendered
    assert shown["first-section"] == "findings" and shown["first-heading"] == "Findings"


def test_every_legend_entry_and_axis_label_names_a_system_never_a_run_directory(rendered):
    shown, _, runs = rendered
    systems = set(runs["system"])
    entries = json.loads(shown["legend"]) + json.loads(shown["axis-systems"])
    assert entries and json.loads(shown["legend"])
    for entry in entries:
        assert any(entry == s or entry.startswith(f"{s} ") for s in systems), entry
        assert not any(entry.startswith(run) for run in runs["run"]), entry


def test_tables_and_figures_render_without_script_errors(rendered):
    shown, log, _ = rendered
    assert int(shown["tables"]) >= 5 and int(shown["figures"]) >= 4
    assert "Uncaught" not in log
