"""pytest-benchmark suite for the CI gate: the short job per framework, repeats as rounds.

    pytest benchmarks/test_sft.py --benchmark-autosave
    pytest benchmarks/test_sft.py --benchmark-compare --benchmark-compare-fail=median:5%

Each round runs the real job once (`python -m bench.run`, a new seed each round) and the timed quantity is
that run's mean steady-state step time: the benchmark's timer is a clock that advances by exactly that, so
pytest-benchmark's own statistics, stored runs, machine info and --benchmark-compare-fail gate step time.
Tokens/s, peak memory, losses and quality of each round go into extra_info; bench.compare gates those.
Not collected by the normal test run (testpaths = tests). Options (benchmarks/conftest.py):
--sftbench-frameworks=trl,llamafactory (default: every registered framework)  --sftbench-repeats=3
--sftbench-overrides="model=... train.max_steps=30"
"""

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core import record, results

REPO = Path(__file__).resolve().parent.parent
_STEP_CLOCK = [0.0]


def step_clock() -> float:
    """Seconds of steady-state step time recorded so far: pytest-benchmark's timer for this suite."""
    return _STEP_CLOCK[0]


def pytest_generate_tests(metafunc):
    if "framework" in metafunc.fixturenames:
        metafunc.parametrize("framework", metafunc.config.getoption("sftbench_frameworks").split(","))


def run_job(framework: str, seed: int, out: Path, overrides: list[str]) -> record.Summary:
    subprocess.run(
        [sys.executable, "-m", "bench.run", f"framework={framework}", f"train.seed={seed}", f"results_dir={out}",
         *overrides],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    (path,) = out.glob(f"*/*/{results.SUMMARY}")
    return record.read_summary(path.parent)


@pytest.mark.benchmark(timer=step_clock, warmup=False, disable_gc=False)
def test_step_time(benchmark, framework, request, tmp_path):
    overrides = request.config.getoption("sftbench_overrides").split()
    seeds = itertools.count(1)
    rounds: list[record.Summary] = []

    def one_repeat():
        seed = next(seeds)
        summary = run_job(framework, seed, tmp_path / f"seed{seed}", overrides)
        if summary.status == "skipped":
            pytest.skip(summary.reason)
        assert summary.status == "ok", summary.reason
        _STEP_CLOCK[0] += summary.metrics["step_time_s_mean"]
        rounds.append(summary)

    benchmark.pedantic(one_repeat, rounds=request.config.getoption("sftbench_repeats"), iterations=1)
    benchmark.extra_info.update(
        framework=framework,
        framework_version=rounds[-1].framework_version,
        fingerprint=rounds[-1].fingerprint.first_batches_sha256,
        rounds=[
            {k: s.metrics.get(k) for k in ("tokens_per_s", "peak_vram_mb", "peak_rss_mb", "first_loss", "final_loss")}
            | {k: s.quality.get(k) for k in ("heldout_loss", "rouge_l", "bleu4")}
            for s in rounds
        ],
    )
