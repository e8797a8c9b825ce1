"""Each step's time by phase in a real TRL run, and TRL's per-token metrics switched off on the same job."""

import pytest

from bench.analysis import findings, runs
from bench.core import record
from tests.conftest import REPO, bench_run, run_dirs
from tests.doubles.slow_loss import SLEEP_S

pytestmark = pytest.mark.integration
QUICK = ("framework=trl", "train.max_steps=6", "eval.enabled=false", "skip_steps=2")


@pytest.fixture(scope="module")
def slow_loss_sweep(tmp_path_factory):
    """TRL, and TRL whose compute_loss sleeps SLEEP_S after the loss (tests/doubles/slow_loss.py)."""
    tmp = tmp_path_factory.mktemp("phases")
    proc = bench_run(tmp, *QUICK, "framework.runner=bench.worker.runners.trl,tests.doubles.slow_loss",
                     f"framework.env.PYTHONPATH={REPO}", "profile.steps=3-4")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp


def test_the_phases_of_a_real_trl_step_sum_to_its_time(slow_loss_sweep):
    for run_dir in run_dirs(slow_loss_sweep):
        run = record.load_run(run_dir)
        assert run.summary.status == "ok" and len(run.events) == 6
        for step in run.events:
            assert step.phases is not None and set(step.phases) == set(findings.PHASES)
            assert sum(step.phases.values()) == pytest.approx(step.step_time_s, rel=1e-6)
            assert step.phases["forward"] > 0 and step.phases["backward"] > 0 and step.phases["optimizer"] > 0


def test_profile_steps_write_a_trace_and_its_top_operators(slow_loss_sweep):
    import gzip
    import json

    run_dir = run_dirs(slow_loss_sweep)[0]
    trace = json.loads(gzip.open(run_dir / "trace.json.gz").read())
    assert trace["traceEvents"] and "Name" in (run_dir / "trace_ops.txt").read_text()
    notes = record.load_run(run_dir).summary.notes
    assert any(n.startswith("profile.steps: steps 3-4 ran under torch.profiler") for n in notes), notes


def test_a_loss_that_sleeps_shows_under_loss_and_metrics_and_in_the_finding(slow_loss_sweep):
    frame, _ = runs.load_runs(run_dirs(slow_loss_sweep)[0].parent)
    quick, slow = (frame[frame["system"].str.contains(name)].iloc[0] for name in ("runners.trl", "slow_loss"))
    grad_accum = int(quick["job.train.grad_accum"])  # compute_loss runs once per micro-batch
    assert slow["phase_loss_ms"] - quick["phase_loss_ms"] >= 0.9 * 1000 * SLEEP_S * grad_accum
    lines = findings.lines(frame, findings.comparisons(frame, "trl"))
    line = next(x for x in lines if "slow_loss" in x.split(" vs ")[0])
    assert "Why: per step, loss and metrics" in line, line


def test_trl_without_its_token_metrics_trains_the_same_tokens_to_the_same_losses(tmp_path):
    proc = bench_run(tmp_path, *QUICK, "framework.token_metrics=true,false")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    on, off = (record.load_run(d) for d in run_dirs(tmp_path))
    assert on.summary.fingerprint.first_batches_sha256 == off.summary.fingerprint.first_batches_sha256
    assert [s.loss for s in on.events] == [s.loss for s in off.events]  # bit for bit: the same loss lines
    assert any("token_metrics=false" in note for note in off.summary.notes)
    assert on.summary.job_key == off.summary.job_key
