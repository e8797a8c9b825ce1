"""A step's time by phase (bench/worker/phases.py), the same hooks for every framework; and the findings'
sentence that names the phase behind a ratio (bench/analysis/findings.py)."""

import types

import pandas as pd
import pytest

from bench.analysis import findings, runs
from bench.core.metrics import PHASES
from bench.worker.phases import Phases
from tests.conftest import step


class Clock:
    """A clock the test moves: marks are its current time."""

    def __init__(self):
        self.now = 0.0

    def mark(self) -> float:
        return self.now

    @staticmethod
    def seconds(start: float, end: float) -> float:
        return end - start


TRAINING = types.SimpleNamespace(training=True)


class Output:
    """A forward's output tensor: its gradient hook runs when the backward reaches it."""

    requires_grad = True

    def register_hook(self, hook) -> None:
        self.hook = hook


def micro_batch(p: Phases, clock: Clock, data: float, forward: float, loss: float, backward: float) -> None:
    """One forward and backward as the Trainer drives them, each phase taking the time given."""
    clock.now += data
    p._forward_start(TRAINING, ())
    clock.now += forward
    out = Output()
    p._forward_end(TRAINING, (), [out])
    clock.now += loss
    out.hook(None)
    clock.now += backward
    p._grad_done(None)


def test_each_interval_of_a_step_goes_to_one_phase_and_they_sum_to_its_time():
    clock = Clock()
    p = Phases(clock)
    p.start()
    micro_batch(p, clock, data=0.01, forward=0.10, loss=0.05, backward=0.20)  # grad accumulation: two
    micro_batch(p, clock, data=0.02, forward=0.10, loss=0.05, backward=0.20)
    clock.now += 0.03  # gradient clipping
    p._optimizer_start(None, (), {})
    clock.now += 0.04
    p._optimizer_end(None, (), {})
    clock.now += 0.01  # scheduler, zero_grad, callbacks
    phases = p.step_end(step_time_s=clock.now)
    assert phases == pytest.approx({"data": 0.03, "forward": 0.20, "loss": 0.10, "backward": 0.40,
                                    "optimizer": 0.04, "rest": 0.04})  # fmt: skip
    assert sum(phases.values()) == pytest.approx(clock.now)


def test_a_loss_that_sleeps_shows_under_loss_and_metrics_only():
    clock = Clock()
    quick, slow = Phases(clock), Phases(clock)
    out = {}
    for name, p, loss in (("quick", quick, 0.001), ("slow", slow, 0.050)):
        clock.now = 0.0
        p.start()
        micro_batch(p, clock, data=0.01, forward=0.1, loss=loss, backward=0.2)
        p._optimizer_start(None, (), {})
        clock.now += 0.02
        p._optimizer_end(None, (), {})
        out[name] = p.step_end(clock.now)
    assert out["slow"]["loss"] - out["quick"]["loss"] == pytest.approx(0.049)
    assert all(out["slow"][k] == pytest.approx(out["quick"][k]) for k in PHASES if k != "loss")


def test_a_forward_in_evaluation_mode_is_not_a_training_step():
    clock = Clock()
    p = Phases(clock)
    p.start()
    clock.now += 1.0
    p._forward_start(types.SimpleNamespace(training=False), ())
    assert p.step_end(1.0) is None  # nothing of a training step was seen


def test_without_phases_measured_there_are_no_phase_metrics():
    from bench.analysis.assess import phase_metrics

    assert phase_metrics([step(step=4), step(step=5)]) == {}
    timed = [step(step=4, phases=dict.fromkeys(PHASES, 0.001)), step(step=5, phases=dict.fromkeys(PHASES, 0.003))]
    assert phase_metrics(timed) == pytest.approx({f"phase_{p}_ms": 2.0 for p in PHASES})


def phase_row(system: str, **ms) -> dict:
    base = {"data": 1.0, "forward": 20.0, "loss": 3.0, "backward": 30.0, "optimizer": 2.0, "rest": 1.0}
    return {"system": system, **{f"phase_{p}_ms": (base | ms)[p] for p in PHASES}}


def test_the_finding_names_the_phase_behind_the_ratio():
    a, b = pd.Series(phase_row("axolotl", loss=3.0)), pd.Series(phase_row("trl", loss=41.0))
    text = findings.phase_text(findings.phase_means([(b, a)]))
    assert text == ("per step, loss and metrics 41.0 ms vs 3.00 ms (100 % of the difference in step time), "
                    "forward, backward, optimizer and data within 5 %")  # fmt: skip
    assert findings.phase_text(findings.phase_means([(b, pd.Series({"system": "old"}))])) is None  # not measured


def test_the_finding_is_recomputed_from_runs_csv(tmp_path):
    """The sentence in the findings follows from the phase columns of runs.csv alone."""
    from tests.test_findings import measured, write_run

    sweep = tmp_path / "s"
    for i, (fw, loss_ms) in enumerate((("trl", 41.0), ("axolotl", 3.0))):
        phases = {k: v for k, v in phase_row(fw, loss=loss_ms).items() if k != "system"}
        write_run(sweep, f"{i}-{fw}", fw, **measured(1000.0 * (1 + i), 600.0, 2.0, **phases))
    frame, _ = runs.load_runs(sweep)
    line = next(x for x in findings.lines(frame, findings.comparisons(frame, "trl")) if x.startswith("axolotl"))
    runs.load(sweep).frame.to_csv(tmp_path / "runs.csv", index=False)
    csv = pd.read_csv(tmp_path / "runs.csv").set_index("framework")
    expected = findings.phase_text(findings.phase_means([(csv.loc["axolotl"], csv.loc["trl"])]))
    assert f"Why: {expected}." in line and "loss and metrics 3.00 ms vs 41.0 ms" in expected


@pytest.mark.parametrize("steps, message", [
    ("5-3", "profile.steps=5-3: the first step must be >= 1 and <= the last"),
    ("0-2", "profile.steps=0-2: the first step must be >= 1"),
    ("3-99", "profile.steps=3-99: the run has 30 steps (train.max_steps); profile steps within them"),
    ("three", "profile.steps=three: expected A-B, the first and last optimizer step (3-5)"),
])  # fmt: skip
def test_profile_steps_outside_the_run_or_reversed_are_one_line_before_it(tmp_path, steps, message):
    from bench.core.errors import SpecError
    from bench.sweep.app import job_spec
    from tests.test_config import typed

    with pytest.raises(SpecError) as e:
        job_spec(typed(f"profile.steps={steps}", f"cache_dir={tmp_path}"), tmp_path / "run")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
