"""report.html rendered in headless Chromium (Debian's chromium, installed by .ci/run): its tables and
images render, with no script errors and no network."""

import re
import shutil
import subprocess

import pytest

from bench import report
from tests.test_report import sweep  # noqa: F401  (fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")


def render(page, profile) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_report_renders_its_tables_and_images(sweep, tmp_path):  # noqa: F811
    report.build(sweep)
    proc = render(sweep / "report.html", tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", proc.stdout).group(1)
    marks = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body))
    assert int(marks["tables"]) >= 3
    assert marks["images"] == marks["images-loaded"] == "3"
    assert "Uncaught" not in proc.stderr
