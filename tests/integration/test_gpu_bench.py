"""scripts/gpu_bench.sh rehearsed on a CPU: every step runs (tiny model, few steps) and its tables come out."""

import json

import pandas as pd
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def rehearsal(gpu_bench_rehearsal):
    return gpu_bench_rehearsal


def test_the_overhead_is_measured_counterbalanced_at_the_packed_load(rehearsal):
    out, stdout = rehearsal
    lines = (out / "overhead.txt").read_text().splitlines()
    assert lines[0].startswith("-- train.packing=packed")
    assert [line[:7] for line in lines if line.startswith("round ")] == ["round 1", "round 2"]
    for part in ("  harness (defaults) ", "  bare again (noise floor) ", "  sampler ", "resolution on this machine",
                 "verdict: ", "sampler CPU"):  # fmt: skip
        assert len([line for line in lines if line.startswith(part)]) == 1, part
    assert "NOT THE SAME JOB" not in "\n".join(lines)
    assert stdout.count("resolution on this machine") == 2  # repeated with the tables at the end


def test_the_framework_comparison_has_a_row_per_framework_and_seed(rehearsal):
    out, stdout = rehearsal
    runs = pd.read_csv(out / "seed-0.5b" / "runs.csv")
    assert set(runs["scenario"]) == {"seed-0.5b"} and set(runs["job.train.packing"]) == {"packed"}
    trl = runs[(runs["framework"] == "trl") & (runs["job.train.kernels"] == "none")]
    liger = runs[runs["framework"].str.startswith("trl") & (runs["job.train.kernels"] == "liger")]
    unsloth = runs[runs["framework"] == "unsloth"]
    assert list(trl["status"]) == ["ok"] and list(trl["seed"]) == [1]
    # No GPU here: the GPU-only rows are there, skipped, with their reasons.
    assert list(liger["status"]) == ["skipped"] and liger["reason"].str.len().min() > 0
    assert list(unsloth["status"]) == ["skipped"] and "GPU" in unsloth["reason"].iloc[0]
    report = (out / "seed-0.5b" / "report.md").read_text()
    assert report.startswith("# sftbench report: seed-0.5b (scenario: seed-0.5b)")
    assert report.split("\n## ", 1)[1].startswith("Findings\n") and "## Speed" in report and "## Runs" in report
    assert "# sftbench report: seed-0.5b" in stdout


def test_the_frontier_has_a_cell_per_framework(rehearsal):
    out, stdout = rehearsal
    found = {f["framework"]: f for f in json.loads((out / "frontier-7b-24gb" / "frontier.json").read_text())}
    assert set(found) == {"trl", "unsloth"}
    assert found["trl"]["largest"] == 256 and found["trl"]["budget_gb"] == 24
    assert found["unsloth"]["largest"] is None  # skipped without a GPU: the search says why and stops
    assert "Memory frontier" in stdout
