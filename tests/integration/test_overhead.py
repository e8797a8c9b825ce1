"""benchmarks/overhead.py for real, in its smallest size (two rounds of a few steps): every part of its report
is there. Nothing here asserts a timing: the figures are whatever this machine gave."""

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def overhead(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "overhead.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip


@pytest.fixture
def report(gpu_bench_rehearsal) -> str:
    """The benchmark's report from the GPU bench's rehearsal, which runs it first (--rounds 2 --steps 4
    --warmup 0, packed rows of the tiny model): one run of it for both test modules."""
    out, _ = gpu_bench_rehearsal
    text = (out / "overhead.txt").read_text(encoding="utf-8")
    assert text.startswith("-- train.packing=packed")  # the script's header line, then the benchmark's own output
    return text.split("\n", 1)[1]


RATIO = r"\d+\.\d{3} \[\d+\.\d{3}, \d+\.\d{3}\]"  # median [interval]


def test_each_round_is_counterbalanced_and_the_same_job(report):
    rounds = [line for line in report.splitlines() if line.startswith("round ")]
    assert rounds[0].startswith("round 1 (no-phases, no-sampler, bare2, bare, harness, no-progress)")
    assert rounds[1].startswith("round 2 (no-progress, harness, bare, bare2, no-sampler, no-phases)")
    assert all("other processes up to" in line for line in rounds) and "NOT THE SAME JOB" not in report


def test_the_report_has_the_ratio_with_its_interval_the_noise_floor_and_the_attribution(report):
    assert "median over 2 rounds [50.0 % interval, order statistics]" in report  # two rounds: 50 % coverage
    for row in ("harness (defaults)", "harness, step phases off", "harness, sampler off",
                "harness, progress display off", "bare again (noise floor)"):  # fmt: skip
        assert re.search(rf"^  {re.escape(row)} +{RATIO}  span \d+\.\d{{3}}  rounds \S+ \S+$", report, re.M), row
    for part in ("step phases", "sampler", "progress display"):
        assert re.search(rf"^  {part} +{RATIO}$", report, re.M), part
    assert re.search(r"^resolution on this machine: ±\d+\.\d % step time", report, re.M)
    assert re.search(r"^harness vs bare, step time: [+-]\d+\.\d % \((within|outside) the noise floor", report, re.M)
    assert re.search(r"^verdict: ", report, re.M)
    assert re.search(r"^sampler CPU: \d+\.\d\d % of one core while training", report, re.M)
    assert re.search(r"^machine: .+ trained on cpu in fp32", report, re.M)


def test_a_run_that_fails_stops_the_benchmark_with_its_reason(trl_python):
    proc = overhead("--rounds", "2", "--steps", "4", "--warmup", "0", "--overrides", "model=no-such-model")
    assert proc.returncode == 1 and "ratio to bare" not in proc.stdout
    assert re.match(r"round 1, harness, step phases off: the run failed, so no ratio: exit \d+, no summary",
                    proc.stderr)  # fmt: skip
    assert "model: no such model" in proc.stderr  # the harness's own reason
