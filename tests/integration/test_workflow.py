"""The GPU workflow's own steps, scripts/gpu_regression.sh, on CPU with the tiny model: sweep, fail on a run
that did not finish ok, compare with the baseline or say in the step summary that there is none."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core import results
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SCRIPT = REPO / "scripts" / "gpu_regression.sh"
SHORT = ("framework=trl", "train.max_steps=8", "eval.enabled=false")  # the evaluation is not what is gated here


def gate(tmp: Path, baseline: Path, name: str, *overrides: str, env: dict[str, str] | None = None):
    """Run the script as the workflow does, sweeping into tmp/name; returns the process and its step summary."""
    summary = tmp / f"{name}.md"
    env = os.environ | {"PYTHON": sys.executable, "GITHUB_STEP_SUMMARY": str(summary), "COLUMNS": "200"} | (env or {})
    proc = subprocess.run([str(SCRIPT), str(baseline), str(tmp / name), *overrides],
                          cwd=REPO, capture_output=True, text=True, timeout=1800, env=env)  # fmt: skip
    return proc, summary.read_text(encoding="utf-8") if summary.exists() else ""


def as_baseline(sweep: Path, dest: Path, edit) -> Path:
    """A copy of `sweep` at dest, with `edit` applied to each run's summary."""
    shutil.copytree(sweep, dest)
    for path in dest.glob(f"*/{results.SUMMARY}"):
        summary = json.loads(path.read_text(encoding="utf-8"))
        edit(summary)
        path.write_text(json.dumps(summary), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """The first run on a branch: no baseline yet. Its sweep is the baseline of the tests below."""
    tmp = tmp_path_factory.mktemp("gate")
    proc, summary = gate(tmp, tmp / "no-baseline", "first", *SHORT)
    return tmp / "first", proc, summary


def test_without_a_baseline_the_gate_passes_and_says_so(first):
    _, proc, summary = first
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no baseline" in summary and "not compared" in summary


def test_with_the_previous_sweep_as_baseline_the_gate_passes_with_the_comparison_table(first, tmp_path):
    def margin(summary):  # load from other processes on a shared CPU must not turn this into a timing test
        summary["metrics"]["tokens_per_s"] /= 100
        summary["metrics"]["peak_rss_mb"] *= 2

    baseline = as_baseline(first[0], tmp_path / "baseline", margin)
    proc, summary = gate(tmp_path, baseline, "candidate", *SHORT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "✅ no regression" in summary
    assert "| runs | metric |" in summary and "| tokens_per_s |" in summary and "| final_loss |" in summary


def test_a_much_slower_candidate_fails_the_gate(first, tmp_path):
    def faster(summary):  # a margin no load on a shared CPU makes up between two sweeps
        summary["metrics"]["tokens_per_s"] *= 100

    baseline = as_baseline(first[0], tmp_path / "baseline", faster)
    proc, summary = gate(tmp_path, baseline, "candidate", *SHORT)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "❌ regression" in summary and "| tokens_per_s |" in summary and "regressed" in summary


def test_a_baseline_from_another_gpu_model_fails_the_gate(first, tmp_path):
    def on_a_gpu(summary):
        summary["hardware"]["gpus"] = [{"name": "NVIDIA H100 80GB HBM3"}]

    baseline = as_baseline(first[0], tmp_path / "baseline", on_a_gpu)
    proc, summary = gate(tmp_path, baseline, "candidate", *SHORT)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "not comparable" in summary and "NVIDIA H100 80GB HBM3" in summary


def test_a_failed_run_fails_the_gate_before_any_comparison(tmp_path, trl_python):
    """Without a baseline the gate would pass: only the check of the sweep's runs fails it."""
    proc, summary = gate(
        tmp_path, tmp_path / "no-baseline", "candidate",
        f"hydra.searchpath=[file://{REPO}/tests/conf]", "framework=misbehave", f"framework.python={trl_python}",
        env={"SFTBENCH_TEST_REPO": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 of 1 runs did not finish ok" in summary and "the framework broke" in summary
    assert "no baseline" not in summary
