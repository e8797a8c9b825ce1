"""The report's trust sections: the hardware and torch build behind each framework's runs, runs of one job on
different torch builds, and runs that shared their machine (recorded runs of tests/fixtures/h200-sweep)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from bench import report, results

FIXTURE = Path(__file__).parent / "fixtures" / "h200-sweep"
HOST = {"cpu_model": "AMD EPYC 9654 96-Core Processor", "cpu_cores": 16, "ram_mb": 131072.0, "gpu_driver": "580.82.07"}


@pytest.fixture
def sweep(tmp_path):
    d = tmp_path / "sweep"
    shutil.copytree(FIXTURE, d)
    return d


def edit_summary(sweep: Path, run: str, change) -> None:
    path = sweep / run / results.SUMMARY
    summary = json.loads(path.read_text())
    change(summary)
    results.write_json_atomic(path, summary)


def section(sweep: Path, heading: str) -> str:
    """The text of one `## heading` section of report.md ("" when the report has none)."""
    report.build(sweep)
    md = (sweep / "report.md").read_text()
    return md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0] if f"## {heading}\n" in md else ""


def test_hardware_section_names_machine_and_torch_build_per_framework(sweep):
    for run in ("0-trl", "1-unsloth"):
        edit_summary(sweep, run, lambda s: s.update(host=HOST))
    text = section(sweep, "Hardware")
    assert "AMD EPYC 9654 96-Core Processor" in text and "580.82.07" in text and "NVIDIA H200" in text
    assert "2.11.0 cuda 13.0" in text and re.search(r"\|\s+128 \|", text)  # torch build, RAM in GB
    assert "0-trl" in text and "1-unsloth" in text and "Warning" not in text  # one job, one torch build


def test_hardware_section_falls_back_to_the_workers_view_for_older_runs(sweep):
    text = section(sweep, "Hardware")  # the fixture predates the parent's `host` record
    assert "x86_64" in text and re.search(r"\|\s+16 \|", text)


def test_one_job_on_different_torch_builds_is_flagged(sweep):
    edit_summary(sweep, "1-unsloth", lambda s: s["versions"].update(torch="2.9.1"))
    text = section(sweep, "Hardware")
    assert "Warning: job ba815082 ran on different torch builds: 2.11.0 cuda 13.0 (0-trl); 2.9.1 cuda 13.0" in text


def test_a_run_that_shared_its_machine_is_listed_with_why(sweep):
    edit_summary(sweep, "1-unsloth", lambda s: s["metrics"].update(other_cpu_cores=2.5, load_avg_1m=6.0))
    text = section(sweep, "Runs that shared their machine")
    assert "1-unsloth" in text and "other processes used 2.50 cores (load average 6.0)" in text
    assert "0-trl" not in text
    frame, _ = report.load_runs(sweep)
    assert frame.set_index("run")["shared_machine"].isna().to_dict() == {"0-trl": True, "1-unsloth": False}


def test_no_shared_machine_section_when_every_run_had_it_to_itself(sweep):
    assert section(sweep, "Runs that shared their machine") == ""
