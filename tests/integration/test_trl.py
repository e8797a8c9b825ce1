"""The TRL job end to end: `python -m bench.run` -> real worker in the real TRL environment."""

import json
import os
import subprocess
import sys

import pytest

from bench.analysis import runs
from bench.core import results
from tests.conftest import REPO, bench_run, run_dirs, sigint_default

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trl_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trl")
    proc = bench_run(tmp, "framework=trl", "train.lr=2e-3,1e-3", "train.max_steps=12")
    return tmp, proc


def test_sweep_exits_zero_and_prints_the_table(trl_sweep):
    _, proc = trl_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tok/s" in proc.stdout and proc.stdout.count(" ok ") >= 2, proc.stdout


def test_each_run_of_the_sweep_is_ok_with_one_event_per_step(trl_sweep):
    tmp, _ = trl_sweep
    dirs = run_dirs(tmp)
    assert len(dirs) == 2
    for run in dirs:
        summary = json.loads((run / results.SUMMARY).read_text())
        assert summary["status"] == "ok", summary
        events = results.read_jsonl(run / results.EVENTS)
        assert [e["step"] for e in events] == list(range(1, 13))
        assert all(e["tokens"] > 0 and 0 < e["trainable_tokens"] < e["tokens"] for e in events)
        assert events[-1]["loss"] < events[0]["loss"]
        m = summary["metrics"]
        assert m["tokens_per_s"] > 0 and m["peak_rss_mb"] > 0 and m["final_loss"] < m["first_loss"]
        assert summary["versions"]["trl"] and summary["versions"]["torch"]
        assert summary["effective"]["precision"] == "fp32"


def test_run_dir_holds_config_spec_samples_and_summary(trl_sweep):
    tmp, _ = trl_sweep
    run = run_dirs(tmp)[0]
    for name in (results.CONFIG, results.SPEC, results.SAMPLES, results.WORKER, results.SUMMARY):
        assert (run / name).exists(), name
    assert len(results.read_jsonl(run / results.SAMPLES)) > 0


def test_sweep_values_reach_their_runs(trl_sweep):
    tmp, _ = trl_sweep
    lrs = sorted(json.loads((run / results.SPEC).read_text())["train"]["lr"] for run in run_dirs(tmp))
    assert lrs == [1e-3, 2e-3]


def test_bad_dataset_stops_with_one_line_and_no_finished_run(tmp_path, write_jsonl):
    bad = write_jsonl([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c"}])
    proc = bench_run(tmp_path / "out", f"dataset.path={bad}")
    assert proc.returncode != 0
    assert f"{bad}:2: field 'output' is missing" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "out").glob(f"*/*/{results.SUMMARY}"))


def test_unknown_framework_is_a_clear_error(tmp_path):
    proc = bench_run(tmp_path, "framework=nosuch")
    assert proc.returncode != 0 and "nosuch" in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_past_its_timeout_is_killed_and_recorded(tmp_path):
    import psutil

    proc = bench_run(tmp_path, "framework=trl", "timeout_s=1")
    assert proc.returncode == 3, proc.stderr[-3000:]  # the run timed out
    (run,) = run_dirs(tmp_path)
    summary = json.loads((run / results.SUMMARY).read_text())
    assert summary["status"] == "timeout" and "timeout_s" in summary["reason"]
    spec = str(run / results.SPEC)
    assert not [p for p in psutil.process_iter(["cmdline"]) if spec in " ".join(p.info["cmdline"] or [])]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupted_sweep_stops_its_worker_and_records_the_run(tmp_path, sig):
    import signal
    import time

    import psutil

    parent = subprocess.Popen(
        [sys.executable, "-m", "bench.run", f"results_dir={tmp_path}", "framework=trl", "train.max_steps=500"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
    )
    # Interrupt once training is under way, however long a busy machine takes to get there (the deadline only
    # ends a test that would otherwise hang).
    deadline = time.time() + 1200
    while not any(len(results.read_jsonl(p)) >= 2 for p in tmp_path.glob("*/*/events.jsonl")):
        assert parent.poll() is None and time.time() < deadline, "the run never reached its second step"
        time.sleep(0.2)
    parent.send_signal(getattr(signal, sig))
    _, stderr = parent.communicate(timeout=600)
    assert parent.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    (run,) = run_dirs(tmp_path)
    summary = json.loads((run / results.SUMMARY).read_text())
    assert summary["status"] == "interrupted"
    assert summary["reason"].startswith(f"interrupted ({'Ctrl-C' if sig == 'SIGINT' else sig})"), summary["reason"]
    spec = str(run / results.SPEC)
    assert not [p for p in psutil.process_iter(["cmdline"]) if spec in " ".join(p.info["cmdline"] or [])]


def test_bad_rows_skipped_by_policy_and_long_rows_are_counted_in_the_summary(tmp_path):
    rows = [{"instruction": f"问题{i}", "input": "", "output": f"回答{i}，请及时就医。"} for i in range(12)]
    rows += [{"instruction": "q"}, {"instruction": "q2", "output": 3}, rows[0]]  # two bad rows, one duplicate
    rows += [{"instruction": "长问题" * 200, "input": "", "output": "长回答" * 200}]  # far past max_seq_len
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    proc = bench_run(
        tmp_path / "out",
        f"dataset.path={path}",
        "dataset.on_bad_row=skip",
        "train.max_steps=4",
        "train.max_seq_len=256",
        "framework=trl",
        "eval.enabled=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "out")
    summary = json.loads((run / results.SUMMARY).read_text())
    assert summary["status"] == "ok", summary.get("log_tail")
    data = summary["data"]
    assert (data["rows"], data["kept"], data["duplicates"], data["over_length_rows"]) == (16, 13, 1, 1)
    assert data["skipped"] == {"field 'output' is missing": 1, "field 'output' is int, expected a string": 1}


def test_a_sweep_through_the_submitit_launcher_lands_in_the_usual_layout(tmp_path):

    proc = bench_run(
        tmp_path, "hydra/launcher=submitit_local", "framework=trl", "train.lr=1e-3,2e-3", "train.max_steps=4",
        "eval.enabled=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 2 and len({d.parent for d in dirs}) == 1  # both jobs in one sweep directory
    assert all(json.loads((d / results.SUMMARY).read_text())["status"] == "ok" for d in dirs)
    frame, _ = runs.load_runs(dirs[0].parent)
    assert sorted(frame["job.train.lr"]) == [1e-3, 2e-3] and frame["job_key"].nunique() == 2


def test_two_process_data_parallel_run_on_cpu_counts_both_ranks(tmp_path):
    """train.num_gpus=2 on CPU: torchrun starts two gloo ranks; the step counts cover both."""
    proc = bench_run(tmp_path, "framework=trl", "train.num_gpus=2", "train.max_steps=4", "eval.enabled=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    summary = json.loads((run / results.SUMMARY).read_text())
    assert summary["status"] == "ok", summary.get("log_tail")
    events = results.read_jsonl(run / results.EVENTS)
    assert [e["gpus"] for e in events] == [2] * 4
    # The seeded order gives the two ranks the examples a single process sees in its first two steps (470, 550).
    assert events[0]["tokens"] == 470 + 550
    m = summary["metrics"]
    assert m["tokens_per_s_per_gpu"] == pytest.approx(m["tokens_per_s"] / 2)


def test_a_slurm_submission_error_surfaces_the_schedulers_message(tmp_path):
    """A stand-in sbatch that refuses the job the way Slurm does; srun only needs to exist."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    message = "sbatch: error: Batch job submission failed: Invalid partition name specified"
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", f"results_dir={tmp_path / 'out'}", "hydra/launcher=slurm", "framework=trl"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"error: Slurm: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr  # one line, not Hydra's stack
