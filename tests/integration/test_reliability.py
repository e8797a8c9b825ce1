"""Workers that fail the ways real ones do; the sweep records each and goes on. Uses the test double
tests/doubles/misbehave.py, run in the TRL environment (it needs torch)."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from bench.core import results
from tests.conftest import REPO, run_dirs

pytestmark = pytest.mark.integration


def sweep_cmd(tmp_path, trl_python, *overrides) -> list[str]:
    """bench.run with the test double registered, in the TRL environment, results under tmp_path."""
    return [sys.executable, "-m", "bench.run", f"results_dir={tmp_path}", f"hydra.searchpath=[file://{REPO}/tests/conf]",
            "framework=misbehave", f"framework.python={trl_python}", *overrides]  # fmt: skip


def sweep_env(**extra: str) -> dict[str, str]:
    return (
        os.environ
        | {"SFTBENCH_TEST_REPO": str(REPO)}
        | extra
    )


def sweep(tmp_path, trl_python, *overrides, env=None):
    return subprocess.run(sweep_cmd(tmp_path, trl_python, *overrides), cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=sweep_env(**(env or {})))  # fmt: skip


def summaries(tmp_path):
    return [json.loads((r / results.SUMMARY).read_text()) for r in run_dirs(tmp_path)]


@pytest.fixture(scope="module")
def failures(tmp_path_factory, trl_python):
    """Every way a worker fails, each in its own run. Only the hung worker meets a short timeout: the others
    get a generous one, so a slow machine still records them as what they are, not as timeouts."""
    tmp = tmp_path_factory.mktemp("failures")
    proc = sweep(tmp, trl_python, "framework.env.MISBEHAVE=raise,exit,kill9,oom", "timeout_s=900")
    hang = sweep(tmp, trl_python, "framework.env.MISBEHAVE=hang", "timeout_s=8")
    assert hang.returncode == 3, hang.stderr[-3000:]  # a run timed out
    return proc, {mode(s): s for s in summaries(tmp)}


def mode(summary):
    (override,) = [o for o in summary["overrides"] if o.lstrip("+").startswith("framework.env.MISBEHAVE=")]
    return override.split("=", 1)[1]


def test_the_sweep_survives_every_failure_and_its_exit_status_says_so(failures):
    proc, runs = failures
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "4 run(s) did not finish ok" in proc.stderr and "report:" in proc.stdout
    assert set(runs) == {"raise", "exit", "kill9", "hang", "oom"}


def test_an_exception_is_a_failed_run_with_reason_and_stderr_tail(failures):
    run = failures[1]["raise"]
    assert run["status"] == "failed" and "RuntimeError: the framework broke" in run["reason"]
    assert "Traceback" in run["log_tail"]


def test_a_nonzero_exit_is_a_failed_run(failures):
    run = failures[1]["exit"]
    assert run["status"] == "failed" and "exited with code 3" in run["reason"]


def test_sigkill_as_from_the_oom_killer_is_a_failed_run(failures):
    run = failures[1]["kill9"]
    assert run["status"] == "failed" and "killed by signal 9" in run["reason"]


def test_a_run_that_died_before_reporting_shows_what_was_installed_not_what_was_asked(failures):
    run = failures[1]["kill9"]  # the worker never wrote worker.json
    assert run["framework_version_requested"] == "0"
    assert run["framework_version"] is None  # the double's distribution is not installed: no version to show
    assert run["versions"]["torch"]  # read from the environment itself


def test_a_hung_worker_is_timed_out_and_its_whole_tree_killed(failures):
    run = failures[1]["hang"]
    assert run["status"] == "timeout"
    orphans = [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[:2] == ["sleep", "600"]]
    assert not orphans


def test_cuda_out_of_memory_is_recognised(failures):
    run = failures[1]["oom"]
    assert run["status"] == "oom" and "CUDA out of memory" in run["reason"]


def test_each_run_starts_after_the_previous_one_is_gone(failures):
    """A dead worker's tree is stopped before the next run starts (how soon is the machine's business)."""
    runs = sorted(failures[1].values(), key=lambda s: s["started_at"])
    assert all(a["ended_at"] <= b["started_at"] for a, b in zip(runs, runs[1:], strict=False))


def test_resume_reruns_only_the_runs_that_did_not_finish_ok(tmp_path, trl_python):
    first = sweep(tmp_path, trl_python, "framework.env.MISBEHAVE=ok", "train.seed=range(4)")
    assert first.returncode == 0, first.stderr[-2000:]
    (sweep_dir,) = tmp_path.iterdir()
    before = {s["run"]: s for s in summaries(tmp_path)}
    assert len(before) == 4 and all(s["status"] == "ok" for s in before.values())
    for s in list(before.values())[2:]:  # two runs that did not finish: one failed, one with no summary at all
        path = sweep_dir / s["run"] / results.SUMMARY
        path.unlink() if s["run"].startswith("3") else results.write_json_atomic(path, s | {"status": "failed"})
    again = resume(sweep_dir)  # the README's command as it stands: the sweep's own overrides come from it
    assert again.returncode == 0, again.stderr[-2000:]
    after = {s["run"]: s for s in summaries(tmp_path)}
    rerun = sorted(r for r in after if after[r]["started_at"] != before[r]["started_at"])
    assert rerun == sorted(list(before)[2:]) and all(s["status"] == "ok" for s in after.values())
    assert again.stderr.count("ok in an earlier attempt") == 2


def resume(sweep_dir, *extra):
    return subprocess.run([sys.executable, "-m", "bench.run", "resume=true", f"hydra.sweep.dir={sweep_dir}", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=sweep_env())  # fmt: skip


def test_resume_of_a_partly_failed_two_framework_sweep_reruns_only_the_failed_run(tmp_path, trl_python):
    import pandas as pd

    cmd = [*sweep_cmd(tmp_path, trl_python, "train.max_steps=3", "eval.enabled=false")]
    cmd[cmd.index("framework=misbehave")] = "framework=trl,misbehave"  # misbehave raises (its conf's default)
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=sweep_env())
    assert first.returncode == 3, first.stderr[-2000:]  # a run failed: the table and report are written all the same
    assert "1 run(s) did not finish ok: 1-misbehave" in first.stderr
    (sweep_dir,) = tmp_path.iterdir()
    before = {s["run"]: s for s in summaries(tmp_path)}
    again = resume(sweep_dir)
    assert again.returncode == 3, again.stderr[-2000:]
    after = {s["run"]: s for s in summaries(tmp_path)}
    assert after["0-trl"] == before["0-trl"]  # kept as it was
    assert after["1-misbehave"]["started_at"] != before["1-misbehave"]["started_at"]  # run again
    assert again.stderr.count("ok in an earlier attempt") == 1
    table = pd.read_csv(sweep_dir / "runs.csv")
    assert sorted(table["run"]) == ["0-trl", "1-misbehave"] and table["system"].is_unique


def test_resume_never_mixes_another_job_into_the_sweep(tmp_path, trl_python):
    first = sweep(tmp_path, trl_python, "framework.env.MISBEHAVE=ok", "train.seed=range(2)")
    assert first.returncode == 0, first.stderr[-2000:]
    (sweep_dir,) = tmp_path.iterdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    again = resume(sweep_dir, "train.lr=1e-4")
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert "train.lr=1e-4 would mix another job into it" in again.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written or deleted


def worker_pids(marker: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_a_worker_does_not_outlive_its_parent(tmp_path, trl_python, sig):
    """SIGKILL leaves the parent no chance to stop its worker: the worker stops itself (and its children)."""
    cmd = sweep_cmd(tmp_path, trl_python, "framework.env.MISBEHAVE=hang", "timeout_s=900")
    proc = subprocess.Popen(cmd, cwd=REPO, env=sweep_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = None
    for _ in range(1200):  # the worker is hanging once its one event is written
        events = next(iter(tmp_path.glob(f"*/*/{results.EVENTS}")), None)
        if events is not None and events.read_text().endswith("\n"):
            break
        time.sleep(0.5)
    assert events is not None, "the worker never started"
    run_dir = events.parent
    assert worker_pids(str(run_dir / results.SPEC))
    proc.send_signal(sig)
    proc.wait(timeout=120)
    for _ in range(120):
        if not worker_pids(str(run_dir / results.SPEC)):
            break
        time.sleep(0.5)
    assert not worker_pids(str(run_dir / results.SPEC)), "worker left running after its parent died"
    orphans = [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[:2] == ["sleep", "600"]]
    assert not orphans


def test_a_secret_never_reaches_the_worker_log_even_when_the_parent_is_killed(tmp_path, trl_python):
    """The parent scrubs the log when a run ends; killed with SIGKILL it never does, so the worker scrubs its
    own output before it reaches the file."""
    secret = "hf_thisIsNotARealToken456"
    cmd = sweep_cmd(tmp_path, trl_python, "framework.env.MISBEHAVE=leak", "timeout_s=900")
    proc = subprocess.Popen(cmd, cwd=REPO, env=sweep_env(HF_TOKEN=secret), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    log = None
    for _ in range(1200):
        log = next(iter(tmp_path.glob(f"*/*/{results.WORKER_LOG}")), None)
        if log is not None and "logging in with" in log.read_text(errors="replace"):
            break
        time.sleep(0.5)
    proc.kill()
    proc.wait(timeout=120)
    text = log.read_text(errors="replace")
    assert "logging in with ***" in text and secret not in text


def test_a_full_disk_ends_the_sweep_with_one_line_and_keeps_what_was_written(small_disk, trl_python):
    proc = sweep(small_disk, trl_python, "framework.env.MISBEHAVE=fill", "eval.enabled=false")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"no space left on {small_disk}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (run_dir,) = [p.parent for p in small_disk.glob(f"*/*/{results.SPEC}")]
    assert (run_dir / results.SPEC).stat().st_size > 0 and (run_dir / results.EVENTS).exists()
    assert not list(small_disk.rglob("*.tmp"))


@pytest.mark.parametrize("mode", ["rmrun", "rmsweep"])
def test_a_run_or_sweep_directory_deleted_mid_run_is_that_runs_failure_and_the_others_are_reported(
    tmp_path, trl_python, mode
):
    proc = sweep(tmp_path, trl_python, f"framework.env.MISBEHAVE={mode},ok", "eval.enabled=false")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "was deleted while it ran; its results are lost, the sweep goes on" in proc.stderr, proc.stderr[-3000:]
    (sweep_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (summary,) = summaries(tmp_path)  # the second run's: recorded, in the table and the report
    assert summary["status"] == "ok" and "MISBEHAVE=ok" in " ".join(summary["overrides"])
    assert (sweep_dir / "report.html").exists() and "1-misbehave" in proc.stdout


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only file system (even root cannot write there)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_results_on_a_read_only_file_system_are_one_line_before_hydra_writes(read_only_dir, trl_python):
    for where in (f"results_dir={read_only_dir / 'results'}", f"hydra.sweep.dir={read_only_dir}"):  # a resume too
        proc = subprocess.run(sweep_cmd(read_only_dir, trl_python, "framework.env.MISBEHAVE=ok", where, "resume=true"),
                              cwd=REPO, capture_output=True, text=True, timeout=300, env=sweep_env())  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert f"{read_only_dir} is not writable" in line, line


def test_a_full_disk_before_the_sweep_starts_is_one_line(small_disk, trl_python):
    from tests.doubles.disk import fill

    fill(small_disk)
    proc = sweep(small_disk, trl_python, "framework.env.MISBEHAVE=ok")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"no space left on {small_disk}" in proc.stderr


def test_a_run_directory_being_written_is_refused_to_a_second_writer(tmp_path, trl_python):
    sweep_dir = tmp_path / "sweep"
    run_dir = sweep_dir / "0-misbehave"
    run_dir.mkdir(parents=True)
    with open(run_dir / results.LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a sweep (or its worker) still writing there holds it
        proc = sweep(tmp_path, trl_python, "framework.env.MISBEHAVE=ok", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 2 and "another process is writing this run" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (run_dir / results.SUMMARY).exists()


def test_secrets_in_the_environment_never_reach_results_files(tmp_path, trl_python):
    secret = "hf_thisIsNotARealToken123"
    proc = sweep(tmp_path, trl_python, "framework.env.MISBEHAVE=raise", env={"HF_TOKEN": secret})
    assert proc.returncode == 3, proc.stderr[-2000:]  # the run failed on purpose
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not [p for p in files if secret in p.read_text(errors="replace")]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=abc", "train.lr='abc': expected float"),
        ("dataset.max_rows=abc", "dataset.max_rows='abc': expected int"),
        ("eval.prompts=abc", "eval.prompts='abc': expected int"),
        ("dataset.shuffle_seed=x", "dataset.shuffle_seed='x': expected int"),
        ("+eval.unknown_key=1", "eval: unknown key(s) unknown_key; known:"),
    ],
)
def test_wrong_typed_override_is_a_one_line_error(tmp_path, trl_python, override, message):
    proc = sweep(tmp_path, trl_python, override)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # rejected before any run: no sweep directory left behind


def test_unknown_config_key_is_rejected(tmp_path, trl_python):
    proc = sweep(tmp_path, trl_python, "train.learning_rate=1e-4")
    assert proc.returncode != 0 and "learning_rate" in proc.stderr and "Traceback" not in proc.stderr


def test_two_sweeps_at_once_write_to_different_directories(tmp_path, trl_python):
    cmd, env = sweep_cmd(tmp_path, trl_python, "framework.env.MISBEHAVE=ok"), sweep_env()
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert len(list(tmp_path.iterdir())) == 2
    assert len(run_dirs(tmp_path)) == 2


def test_memory_frontier_against_a_simulated_out_of_memory_threshold(tmp_path, trl_python):
    cmd = sweep_cmd(tmp_path, trl_python, "framework.env.MISBEHAVE=oom_above", "+framework.env.MISBEHAVE_LIMIT=1000",
                    "frontier.start=512", "frontier.granularity=128", "frontier.limit=4096",
                    "frontier.vram_budget_gb=24,80")  # fmt: skip
    cmd[cmd.index("bench.run")] = "bench.frontier"
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=sweep_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = tmp_path.iterdir()
    found = json.loads((sweep / "frontier.json").read_text())
    assert sorted(f["budget_gb"] for f in found) == [24.0, 80.0]
    for f in found:
        assert f["largest"] == 896 and f["axis"] == "seq_len"  # doubling to the first OOM, then halving the gap
        assert [p["value"] for p in f["probes"]] == [512, 1024, 768, 896]
        assert [p["status"] for p in f["probes"]].count("oom") == 1
        assert f["budget_note"] == f"train.vram_budget_gb={f['budget_gb']} ignored: no GPU"  # CPU: not applied
    assert "896 (budget not applied)" in proc.stdout
    report_md = (sweep / "report.md").read_text()
    assert "Memory frontier" in report_md and "train.vram_budget_gb=24.0 ignored: no GPU" in report_md


def test_a_frontier_that_does_not_fit_at_minimum_says_so(tmp_path, trl_python):
    cmd = sweep_cmd(tmp_path, trl_python, "framework.env.MISBEHAVE=oom_above", "+framework.env.MISBEHAVE_LIMIT=100",
                    "frontier.start=128", "frontier.limit=4096")  # fmt: skip
    cmd[cmd.index("bench.run")] = "bench.frontier"
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=sweep_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = json.loads((next(tmp_path.iterdir()) / "frontier.json").read_text())
    assert found["largest"] is None and len(found["probes"]) == 1
    assert "does not fit at minimum" in proc.stdout


def test_a_run_that_stops_the_sweep_leaves_the_earlier_runs_their_table_and_report(tmp_path, trl_python):
    """Input that only a later run meets (here a data file with a bad row; a disk that filled since the last run
    the same way) stops the sweep with one line; the runs before it are tabled and reported."""
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(json.dumps({"instruction": "q", "input": "", "output": "a"}) + "\n", encoding="utf-8")
    bad.write_text(json.dumps({"instruction": "q"}) + "\n", encoding="utf-8")
    proc = sweep(tmp_path / "results", trl_python, "framework.env.MISBEHAVE=ok", f"dataset.path={good},{bad}",
                 "eval.enabled=false")  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{bad}:1: field 'output' is missing" in proc.stderr
    (sweep_dir,) = (tmp_path / "results").iterdir()
    assert (sweep_dir / "report.html").exists() and "0-misbehave" in proc.stdout  # the table of the run before


def test_a_held_out_split_of_training_rows_is_said_in_findings_run_notes_and_runs_csv(tmp_path, trl_python):
    import pandas as pd

    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(json.dumps({"instruction": f"q{i}", "input": "", "output": f"a{i}"}) + "\n" for i in range(12))
    (data / "train_zh_0.json").write_text(rows, encoding="utf-8")
    (data / "valid_zh_0.json").write_text(rows, encoding="utf-8")  # every held-out row is a training row
    proc = sweep(tmp_path / "results", trl_python, "framework.env.MISBEHAVE=ok", f"dataset.path={data}",
                 "eval.enabled=false")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    note = "quality is recall: 12 of 12 held-out rows are also training rows"
    (sweep_dir,) = (tmp_path / "results").iterdir()
    printed = " ".join(proc.stdout.split())  # the findings as the sweep printed them, wrapped or not
    assert "Notes on misbehave" in printed and note in printed
    assert note in (sweep_dir / "report.md").read_text().split("## Run notes", 1)[1]
    assert list(pd.read_csv(sweep_dir / "runs.csv")["notes"]) == [note]
