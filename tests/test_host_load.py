"""How far a run's numbers can be trusted: the host's load over its training window, the shared-machine
warning, where its time went, and runs of one job on different torch builds (bench/analysis/assess.py)."""

import pytest
from rich.console import Console

from bench.analysis.assess import (
    SHARED_CPU_CORES,
    host_load,
    shared_machine,
    sweep_table,
    time_cells,
    torch_build,
    torch_build_mismatches,
)
from bench.core import metrics as registry
from tests.conftest import as_run, as_summary
from tests.conftest import sample as record_sample


def sample(time, busy, tree, harness=0.0, load=1.0, gpus=None):
    return record_sample(t=time, time=time, load1=load, host_busy_s=busy, tree_cpu_s=tree, harness_cpu_s=harness,
                         gpus=gpus)


def rendered(table) -> str:
    console = Console(width=400, record=True)
    console.print(table)
    return console.export_text()


def test_other_cpu_is_machine_busy_time_less_the_worker_tree_and_the_harness():
    # 10 s of training: the machine was busy 25 CPU s, the worker 20, the harness 1 -> others 4 CPU s
    samples = [sample(100, 0, 0), sample(105, 12, 10, 0.5, load=2.0), sample(110, 25, 20, 1.0, load=3.0)]
    m = host_load(samples, (100, 110))
    assert m["other_cpu_cores"] == pytest.approx(0.4)
    assert m["load_avg_1m"] == pytest.approx(2.0)


def test_the_window_is_bracketed_by_the_samples_around_it():
    # Samples before and after training are not counted beyond the nearest one on each side.
    samples = [sample(90, 0, 0), sample(99, 50, 0), sample(101, 52, 2), sample(109, 60, 10), sample(111, 62, 12),
               sample(130, 200, 12)]  # fmt: skip
    assert host_load(samples, (100, 110))["other_cpu_cores"] == pytest.approx(0.0)


def test_other_cpu_is_never_negative():
    # The tree's counters and the machine's are read a moment apart: a tiny negative remainder is zero.
    assert host_load([sample(0, 0, 0), sample(1, 1.0, 1.02)], (0, 1))["other_cpu_cores"] == 0.0


def test_host_load_needs_a_window_and_two_samples():
    assert host_load([sample(0, 0, 0), sample(1, 1, 1)], None) == {}
    assert host_load([sample(0, 0, 0)], (0, 1)) == {}
    assert host_load([record_sample(rss_mb=1)] * 2, (0, 1)) == {}  # samples from an older harness


def test_other_processes_on_the_runs_gpus_are_counted_once_each():
    gpus = [[{"index": 0, "used_mb": 0, "other_pids": []}], [{"index": 0, "used_mb": 0, "other_pids": [7, 8]}],
            [{"index": 0, "used_mb": 0, "other_pids": [7]}]]
    samples = [sample(t, t, t, gpus=g) for t, g in enumerate(gpus)]
    assert host_load(samples, (0, 2))["gpu_other_processes"] == 2
    assert "gpu_other_processes" not in host_load([sample(0, 0, 0), sample(1, 1, 1)], (0, 1))  # CPU run


def test_host_load_metrics_are_declared():
    for name in ("load_avg_1m", "other_cpu_cores", "gpu_other_processes", "model_build_s", "env_check_s"):
        assert registry.get(name).source == "metrics"


def test_a_run_that_shared_its_machine_says_why():
    assert shared_machine({"other_cpu_cores": SHARED_CPU_CORES, "load_avg_1m": 1.0}) is None  # at the threshold
    why = shared_machine({"other_cpu_cores": 0.85, "load_avg_1m": 3.1})
    assert why == "shared its machine while training: other processes used 0.85 cores (load average 3.1)"
    assert "1 other process(es) computed on its GPU" in shared_machine({"gpu_other_processes": 1})
    assert shared_machine({}) is None  # not measured: no claim either way


def test_time_cells_keep_one_time_costs_apart_from_the_run():
    m = {"wall_s": 20.0, "model_load_s": 1.25, "train_s": 12.0, "eval_s": 3.5, "env_build_s": 61.0,
         "model_build_s": 30.2}  # fmt: skip
    assert time_cells(m) == ("load 1.2 train 12.0 eval 3.5", "env build 61 model build 30")
    assert time_cells({"train_s": 2.0, "env_check_s": 0.84}) == ("train 2.0", "env check 0.8")
    assert time_cells({}) == ("-", "-")


def summary(run, job="job-a", torch="2.13.0", cuda=None, **metrics):
    return {
        "run": run,
        "framework": run.split("-")[1],
        "job_key": job,
        "status": "ok",
        "versions": {"torch": torch},
        "hardware": {"cuda": cuda},
        "metrics": {"tokens_per_s": 100.0, "wall_s": 20.0, "train_s": 12.0, **metrics},
    }


def test_torch_build_names_version_and_cuda():
    assert torch_build(as_summary(summary("0-trl", torch="2.13.0", cuda="12.8"))) == "2.13.0 cuda 12.8"
    assert torch_build(as_summary(summary("0-trl", torch="2.13.0+cpu"))) == "2.13.0+cpu cpu-only"
    assert torch_build(as_summary({"versions": {}})) is None


def test_one_job_on_different_torch_builds_is_flagged_per_job():
    runs = [("job-a", "0-trl", "2.13.0 cuda 12.8"), ("job-a", "1-llamafactory", "2.9.1 cuda 12.8"),
            ("job-b", "2-trl", "2.13.0 cuda 12.8"), ("job-b", "3-trl", "2.13.0 cuda 12.8"),
            ("job-c", "4-trl", None), ("job-c", "5-unsloth", float("nan"))]  # fmt: skip (NaN: a skipped run in a frame)
    (line,) = torch_build_mismatches(runs)
    assert line == "job job-a ran on different torch builds: 2.13.0 cuda 12.8 (0-trl); 2.9.1 cuda 12.8 (1-llamafactory)"


def test_sweep_table_shows_the_time_breakdown_and_warns_of_a_shared_machine_and_torch_builds():
    rows = [
        summary("0-trl", env_build_s=61.0, model_build_s=30.0, other_cpu_cores=0.02, load_avg_1m=0.5),
        summary("1-llamafactory", torch="2.9.1", env_check_s=1.5, other_cpu_cores=1.5, load_avg_1m=4.0),
    ]
    text = rendered(sweep_table([as_run(r) for r in rows]))
    assert "env build 61 model build 30" in text and "env check 1.5" in text and "train 12.0" in text
    assert "100 shared" in text  # the second run's throughput is marked
    assert "1-llamafactory shared its machine while training: other processes used 1.50 cores" in text
    assert "0-trl shared" not in text
    assert "job job-a ran on different torch builds" in text


def test_a_model_built_by_another_process_while_this_sweep_waited_is_a_wait_not_a_build(tmp_path):
    """The build's lock is held elsewhere; when that build completes, this sweep records how long it waited
    (model_wait_s), not a build of its own (model_build_s)."""
    import dataclasses
    import fcntl
    import os
    import sys
    import threading
    import time

    from bench.sweep import app as run
    from tests.conftest import REPO, make_spec

    spec = make_spec()
    model = tmp_path / "models" / "tiny-abc"
    spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, path=str(model)))
    model.parent.mkdir(parents=True)
    out = {}
    with open(model.with_name(model.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process's build in progress
        env = os.environ | {"PYTHONPATH": str(REPO)}
        waiting = threading.Thread(target=lambda: out.update(run.build_model(spec, sys.executable, env)))
        waiting.start()
        log = model.with_name(model.name + ".build.log")
        deadline = time.monotonic() + 300
        while not (log.exists() and "waiting for a build" in log.read_text()):
            assert time.monotonic() < deadline and waiting.is_alive()
            time.sleep(0.1)
        model.mkdir()
        (model / ".complete").touch()  # the other process finishes its build
    waiting.join(timeout=300)
    assert set(out) == {"model_wait_s"} and out["model_wait_s"] > 0
