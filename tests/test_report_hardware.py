"""The report's Conditions section: the hardware and torch build behind each system's runs, runs of one job on
different torch builds, and runs that shared their machine (recorded runs of tests/fixtures/h200-sweep)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from bench.analysis import report, runs
from bench.core import results

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


def row(text: str, system: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {system} "))


def test_conditions_name_machine_and_torch_build_per_system(sweep):
    for run in ("0-trl", "1-unsloth"):
        edit_summary(sweep, run, lambda s: s.update(host=HOST))
    text = section(sweep, "Conditions")
    assert "AMD EPYC 9654 96-Core Processor" in text and "580.82.07" in text and "NVIDIA H200" in text
    assert "2.11.0 cuda 13.0" in text and re.search(r"\|\s+128 \|", text)  # torch build, RAM in GB
    assert row(text, "trl 1.15.0") and row(text, "unsloth 2026.10.9") and "Warning" not in text  # one torch build


def test_conditions_fall_back_to_the_workers_view_for_older_runs(sweep):
    text = section(sweep, "Conditions")  # the fixture predates the parent's `host` record
    assert "x86_64" in text and re.search(r"\|\s+16 \|", text)


def test_one_job_on_different_torch_builds_is_flagged(sweep):
    edit_summary(sweep, "1-unsloth", lambda s: s["versions"].update(torch="2.9.1"))
    text = section(sweep, "Conditions")
    assert ("Warning: job ba815082 ran on different torch builds: 2.11.0 cuda 13.0 (trl 1.15.0); 2.9.1 cuda 13.0 "
            "(unsloth 2026.10.9)") in text  # fmt: skip


def test_a_run_that_shared_its_machine_is_listed_with_why(sweep):
    edit_summary(sweep, "1-unsloth", lambda s: s["metrics"].update(other_cpu_cores=2.5, load_avg_1m=6.0))
    text = section(sweep, "Conditions")
    assert "1 of 1 runs: other processes used 2.50 cores (load average 6.0)" in row(text, "unsloth 2026.10.9")
    assert "| no " in row(text, "trl 1.15.0")
    frame, _ = runs.load_runs(sweep)
    assert frame.set_index("run")["shared_machine"].isna().to_dict() == {"0-trl": True, "1-unsloth": False}


def test_no_run_shared_its_machine_when_every_run_had_it_to_itself(sweep):
    text = section(sweep, "Conditions")
    assert "| no " in row(text, "trl 1.15.0") and "| no " in row(text, "unsloth 2026.10.9")
