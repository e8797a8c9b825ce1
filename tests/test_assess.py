import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest

from bench.analysis.assess import final_status, loss_metrics, status_of, steady_state, sweep_table
from bench.core import record
from bench.sweep.launch import Outcome
from bench.sweep.sampler import SamplerStats
from tests.conftest import step


def events(n=6, tokens=100, step_time_s=0.5):
    return [step(step=s, loss=5.0 - 0.1 * s, lr=1e-3, grad_norm=1.0, tokens=tokens, trainable_tokens=tokens // 2,
                 step_time_s=step_time_s) for s in range(1, n + 1)]  # fmt: skip


def outcome(**kw):
    base = dict(returncode=0, timed_out=False, interrupted="", wall_s=10.0, sampler=SamplerStats(), log_tail="")
    return Outcome(**(base | kw))


def test_steady_state_excludes_the_first_steps():
    ev = events()
    ev[0].step_time_s = 100.0  # a slow first step must not count
    m = steady_state(ev, skip_steps=2, samples_per_step=4)
    assert m["steady_steps"] == 4
    assert m["tokens_per_s"] == 200.0
    assert m["trainable_tokens_per_s"] == 100.0
    assert m["samples_per_s"] == 8.0


def test_steady_state_is_empty_without_steady_steps():
    assert steady_state(events(2), skip_steps=2, samples_per_step=1) == {}


def test_loss_metrics_take_first_and_last_step():
    assert loss_metrics(events(3)) == {"steps": 3, "first_loss": 4.9, "final_loss": 4.7}


def test_worker_that_died_without_result_is_failed_with_signal():
    status, reason = status_of(None, outcome(returncode=-9))
    assert status == "failed" and "killed by signal 9" in reason


def test_timeout_wins_over_worker_report():
    assert status_of(record.WorkerResult("ok"), outcome(timed_out=True))[0] == "timeout"


def test_skipped_worker_keeps_its_reason():
    assert status_of(record.WorkerResult("skipped", "needs a GPU"), outcome()) == ("skipped", "needs a GPU")


def test_summaries_are_written_atomically_and_loaded_in_run_order(tmp_path: Path):
    for i in (10, 2, 1):
        run = tmp_path / f"{i}-trl"
        run.mkdir()
        record.write_summary(run, record.Summary(run.name, "ok"))
    (tmp_path / "3-trl").mkdir()  # unfinished: no summary
    runs, unfinished = record.load_sweep(tmp_path)
    assert [r.name for r in runs] == ["1-trl", "2-trl", "10-trl"]
    assert [(u.run, u.why) for u in unfinished] == [("3-trl", "no summary.json (did not finish)")]
    assert not list(tmp_path.glob("*/.*.tmp"))


def test_sweep_table_has_a_row_per_run():
    rows = [
        record.Run(Path("0-trl"), record.Summary("0-trl", "ok", framework="trl", metrics={"tokens_per_s": 1.0}), {},
                   [], []),
        record.Run(Path("1-trl"), record.Summary("1-trl", "failed", "boom", framework="trl"), {}, [], []),
    ]
    assert sweep_table(rows).row_count == 2


def run(name, framework, sha="abc", first_loss=6.0, job="job-a", seed=42, status="ok", events=()):
    fp = record.Fingerprint(examples=10, dataset_tokens=100, dataset_trainable_tokens=40, first_batches_sha256=sha)
    summary = record.Summary(name, status, framework=framework, job_key=job, seed=seed, fingerprint=fp,
                             overrides=[f"framework={framework}"], metrics={"first_loss": first_loss})
    return record.Run(Path(name), summary, {}, list(events), [])


def curve(losses, lrs=None):
    lrs = lrs or [0.0, 1e-3] + [2e-3] * (len(losses) - 2)  # linear warmup from 0 over 2 steps
    return [step(step=i + 1, loss=loss, lr=lr) for i, (loss, lr) in enumerate(zip(losses, lrs, strict=True))]


def test_parity_compares_each_run_with_the_first_run_of_the_same_job_and_seed():
    from bench.analysis.assess import parity

    runs = [
        run("0", "trl"),
        run("1", "llamafactory", first_loss=6.0 * (1 + 5e-6)),
        run("2", "trl", job="job-b", sha="zzz"),
        run("3", "llamafactory", job="job-b"),
        run("4", "trl", seed=7, sha="seed7"),  # a repeat with another seed: its own reference
    ]
    p = parity(runs)
    assert p[0]["reference"] == "0" and p[1]["reference"] == "0"
    assert p[1]["same_tokens"] and p[1]["same_start"]
    assert p[2]["reference"] == "2"  # another job: its own reference
    assert not p[3]["same_tokens"]
    assert p[4]["reference"] == "4"


def test_a_framework_release_sweep_is_two_jobs_only_if_the_spec_differs():
    """Framework version is not part of the job: two releases of one job share a reference (and are compared)."""
    from bench.analysis.assess import parity

    a, b = run("0", "trl"), run("1", "trl")
    a.summary.framework_version, b.summary.framework_version = "0.24.0", "1.16.0"
    assert parity([a, b])[1]["reference"] == "0"


def test_parity_flags_a_step1_loss_beyond_tolerance():
    from bench.analysis.assess import parity

    p = parity([run("0", "trl"), run("1", "llamafactory", first_loss=6.001)])
    assert not p[1]["same_start"] and p[1]["step1_loss_rel_diff"] > 1e-5


def test_a_different_lora_initialisation_shows_in_the_curve_not_at_step_1():
    """LoRA B starts at zero, so step 1 is the base model's loss whatever A is; warmup trains step 1 at lr 0.
    The curve after the first real update tells the runs apart."""
    from bench.analysis.assess import parity

    ref = curve([6.0, 6.0, 5.8, 5.6, 5.5, 5.4, 5.3, 5.2])
    other = curve([6.0, 6.0, 5.7, 5.6, 5.5, 5.4, 5.3, 5.2])  # same step-1 and step-2 loss, apart at step 3
    p = parity([run("0", "trl", events=ref), run("1", "llamafactory", events=other)])
    assert p[1]["same_start"] and p[1]["step1_loss_rel_diff"] == 0.0
    assert not p[1]["same_curve"] and p[1]["curve_loss_rel_diff"] == pytest.approx(0.1 / 5.8)
    assert p[1]["curve_steps"] == "3-7"


def test_the_same_curve_passes():
    from bench.analysis.assess import parity

    losses = curve([6.0, 6.0, 5.8, 5.6, 5.5, 5.4, 5.3, 5.2])
    p = parity([run("0", "trl", events=losses), run("1", "llamafactory", events=losses)])
    assert p[1]["same_curve"] and p[1]["curve_loss_rel_diff"] == 0.0


def test_parity_skips_runs_that_did_not_finish():
    from bench.analysis.assess import parity

    assert parity([run("0", "unsloth", status="skipped"), run("1", "trl")])[0] == {}


def test_a_sigkill_under_a_memory_limit_is_called_a_likely_out_of_memory():
    from bench.analysis.assess import killed_hint

    reason = "worker killed by signal 9 without reporting a result"
    hint = "likely out of memory (peak RSS 23,000 MB, limit 24,576 MB)"
    assert killed_hint(reason, 23_000.4, 24_576.0) == f"{reason}; {hint}"
    assert killed_hint(reason, 100.0, None) == reason  # no known limit: no guess
    assert killed_hint("worker exited with code 3", 100.0, 24_576.0) == "worker exited with code 3"


def test_two_runs_of_one_job_whose_padding_differs_by_more_than_a_point_are_flagged():
    from bench.analysis.assess import parity

    a, b, c = run("0", "trl"), run("1", "llamafactory"), run("2", "unsloth")
    a.summary.metrics["padding_ratio"], b.summary.metrics["padding_ratio"] = 0.20, 0.205
    c.summary.metrics["padding_ratio"] = 0.02
    p = parity([a, b, c])
    assert p[1]["same_padding"] and not p[2]["same_padding"]
    assert p[2]["padding_diff"] == pytest.approx(0.18)
    table = sweep_table([a, b, c])
    cells = [str(cell) for cell in table.columns[[col.header for col in table.columns].index("data fingerprint")].cells]
    assert "padding Δ18.0 pts" in cells[2] and "padding" not in cells[1]


def test_time_to_target_is_the_first_evaluation_at_or_below_it():
    from bench.analysis.assess import target_metrics

    ev = events(6)
    ev[1].heldout_loss, ev[1].elapsed_s = 3.0, 4.0
    ev[3].heldout_loss, ev[3].elapsed_s = 2.4, 9.5
    ev[5].heldout_loss, ev[5].elapsed_s = 2.1, 15.0
    assert target_metrics(ev, 2.5) == {"time_to_target_s": 9.5, "steps_to_target": 4}
    assert target_metrics(ev, 2.0) == {}  # not reached: no figure, and the report says so
    assert target_metrics(ev, None) == {}


def test_the_layout_gives_the_padding_share_and_sequences_per_row():
    from bench.analysis.assess import layout_metrics

    layout = {"tokens_fed": 1000, "tokens": 800, "rows": 8, "sequences": 24, "padding_ratio": 0.2}
    assert layout_metrics(layout) == {"padding_ratio": 0.2, "sequences_per_row": 3.0}
    assert layout_metrics({}) == {}


@pytest.mark.parametrize("sig, cause", [(signal.SIGHUP, "SIGHUP: the terminal hung up"), (signal.SIGTERM, "SIGTERM")])
def test_an_interrupted_run_names_the_signal_that_stopped_it(sig, cause):
    from bench.sweep import launch

    with pytest.raises(KeyboardInterrupt) as stopped, launch.interruptible():
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises at the next bytecode; never reached
    assert launch.interrupt_cause(stopped.value) == cause
    status, reason = status_of(None, outcome(interrupted=launch.interrupt_cause(stopped.value)))
    assert (status, reason) == ("interrupted", f"interrupted ({cause}); worker process tree stopped")
    assert launch.interrupt_cause(KeyboardInterrupt()) == "Ctrl-C"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_memory_limit_is_read_from_the_workers_own_cgroup_not_the_root(tmp_path, version):
    """The root of the hierarchy says "no limit"; the worker's cgroup (or one above it) sets the one that
    kills it. The smallest limit on the way up wins."""
    from bench.analysis.assess import memory_limit_mb

    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "4242").mkdir(parents=True)
    if version == "v2":
        (proc / "4242" / "cgroup").write_text("0::/ci.slice/job-7\n")
        base, name, unlimited = cgroup, "memory.max", "max"
    else:
        (proc / "4242" / "cgroup").write_text("12:cpu,cpuacct:/ci/job-7\n4:memory:/ci/job-7\n")
        base, name, unlimited = cgroup / "memory", "memory.limit_in_bytes", str(2**63 - 4096)
    leaf = base / ("ci.slice/job-7" if version == "v2" else "ci/job-7")
    leaf.mkdir(parents=True)
    (base / name).write_text(unlimited)
    (leaf / name).write_text(str(6 * 2**30))
    (leaf.parent / name).write_text(str(8 * 2**30))
    assert memory_limit_mb(4242, proc, cgroup) == 6 * 1024
    (leaf / name).write_text(unlimited)
    assert memory_limit_mb(4242, proc, cgroup) == 8 * 1024
    (leaf.parent / name).write_text(unlimited)
    assert memory_limit_mb(4242, proc, cgroup) is None
    assert memory_limit_mb(9999, proc, cgroup) is None  # a process gone before its cgroup was read


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"loss": float("nan")}, "training diverged at step 4: loss nan"),
        ({"grad_norm": float("inf")}, "training diverged at step 4: gradient norm inf"),
        ({"loss": 0.0, "grad_norm": 0.0}, "training stopped at step 4: loss and gradient norm exactly 0"),
    ],
)
def test_a_run_whose_steps_did_not_train_is_diverged_never_ok(change, reason):
    ev = events()
    ev[3] = dataclasses.replace(ev[3], **change)
    assert final_status(record.WorkerResult("ok"), outcome(), ev) == ("diverged", reason)


def test_a_zero_loss_with_a_gradient_still_trains_and_a_failure_stays_a_failure():
    ev = events()
    ev[3].loss = 0.0
    assert final_status(record.WorkerResult("ok"), outcome(), ev)[0] == "ok"
    ev[3].loss = float("nan")
    assert final_status(record.WorkerResult("failed", "broke"), outcome(), ev) == ("failed", "broke")


def test_parity_never_calls_two_diverged_runs_the_same():
    from bench.analysis.assess import parity
    from tests.conftest import as_run

    runs = [as_run({"run": str(i), "status": "diverged", "job_key": "k", "seed": 1,
                    "fingerprint": {"first_batches_sha256": "same"}}) for i in range(2)]  # fmt: skip
    assert parity(runs) == [{}, {}]
