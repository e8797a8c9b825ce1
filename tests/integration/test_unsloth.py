"""Unsloth end to end: skipped with its reason on a CPU host, trained for real on an NVIDIA GPU."""

import json
import os

import pytest

from bench.core import results
from bench.sweep.sampler import host_has_gpu
from tests.conftest import bench_run, run_dirs

pytestmark = pytest.mark.integration


@pytest.mark.skipif(host_has_gpu(), reason="this host has a GPU: Unsloth would run, not skip")
def test_on_cpu_unsloth_is_skipped_with_reason_and_the_sweep_goes_on(main_job):
    tmp_path, proc = main_job  # every registered framework's run of the main job (tests/integration/conftest.py)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_framework = {}
    for run in run_dirs(tmp_path):
        summary = json.loads((run / results.SUMMARY).read_text())
        by_framework[summary["framework"]] = summary
    assert by_framework["unsloth"]["status"] == "skipped"
    assert "requires an NVIDIA/AMD/Intel GPU" in by_framework["unsloth"]["reason"]
    assert "tokens_per_s" not in by_framework["unsloth"]["metrics"]
    assert by_framework["trl"]["status"] == "ok"
    assert "skipped" in proc.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not host_has_gpu(), reason="needs an NVIDIA GPU")
def test_unsloth_trains_on_the_gpu(tmp_path):
    """On a GPU runner; SFTBENCH_GPU_PYTHON names a prepared interpreter where PyPI is out of reach."""
    extra = [f"framework.python={os.environ['SFTBENCH_GPU_PYTHON']}"] if "SFTBENCH_GPU_PYTHON" in os.environ else []
    proc = bench_run(tmp_path, "framework=unsloth", "model=qwen2.5-0.5b-arch", "train.max_steps=8", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    summary = json.loads((run / results.SUMMARY).read_text())
    assert summary["status"] == "ok", summary.get("log_tail")
    assert summary["versions"]["unsloth"]
    assert summary["metrics"]["peak_vram_mb"] > 0 and summary["metrics"]["tokens_per_s"] > 0
