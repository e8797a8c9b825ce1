"""benchmarks/overhead.py's arithmetic and its refusals, without training (tests/integration/test_overhead.py
runs it for real): the counterbalanced order, the median's interval, the noise floor and the verdict."""

import importlib.util
import sys

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("overhead", REPO / "benchmarks" / "overhead.py")
overhead = sys.modules["overhead"] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
spec.loader.exec_module(overhead)


def test_rounds_alternate_the_order_and_the_harness_sits_where_the_second_bare_run_does():
    first, second = overhead.order_of(0), overhead.order_of(1)
    assert second == first[::-1]
    assert {a.name for a in first} == {"bare", "bare2", "harness", "no-phases", "no-sampler", "no-progress"}
    # Over an ABBA pair every arm's mean position is the same: a drifting machine favours none.
    names = [a.name for a in first]
    assert {names.index(n) + names[::-1].index(n) for n in names} == {len(names) - 1}
    # The noise floor (bare2 / bare) is measured in the harness's placement: both neighbour bare, on either side.
    assert abs(names.index("bare2") - names.index("bare")) == abs(names.index("harness") - names.index("bare")) == 1
    assert not first[0].bare and not second[0].bare  # a harness run first: the bare runs need its spec.json


@pytest.mark.parametrize(
    ("n", "k", "coverage"),
    [(2, 1, 0.5), (5, 1, 1 - 2 / 32), (6, 1, 1 - 2 / 64), (8, 1, 1 - 2 / 256), (10, 2, 1 - 2 * 11 / 1024)],
)
def test_the_medians_interval_is_the_innermost_order_statistics_that_reach_95_percent(n, k, coverage):
    values = [float(i) for i in range(n, 0, -1)]  # given unsorted
    iv = overhead.median_interval(values)
    assert (iv.lo, iv.hi) == (float(k), float(n + 1 - k)) and iv.coverage == pytest.approx(coverage)
    assert iv.median == pytest.approx((n + 1) / 2)


def test_the_resolution_is_the_farther_end_of_the_noise_interval_from_one():
    assert overhead.floor_pct(overhead.Interval(1.0, 0.97, 1.01, 0.99)) == pytest.approx(3.0)
    assert overhead.floor_pct(overhead.Interval(1.0, 1.01, 1.05, 0.99)) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("lo", "hi", "floor", "says"),
    [
        (0.99, 1.01, 3.0, "cannot resolve < 2 %"),  # a noise floor wider than the target: no claim either way
        (0.99, 1.01, 1.0, "under the 2 % target"),
        (1.03, 1.05, 1.0, "over the 2 % target"),
        (1.00, 1.03, 1.0, "undecided"),
    ],
)
def test_the_verdict_claims_only_what_the_noise_floor_allows(lo, hi, floor, says):
    assert overhead.target_verdict(overhead.Interval(1.0, lo, hi, 0.99), floor, 2.0).startswith(says)


def rounds(step: dict[str, list[float]]) -> list[dict]:
    n = len(step["bare"])
    return [{name: overhead.Run(times[i], 10 * times[i], 5.0, 0.0) for name, times in step.items()} for i in range(n)]


def test_the_report_has_a_row_per_arm_the_attribution_the_floor_and_a_verdict():
    step = {"bare": [1.0, 1.0, 1.0], "bare2": [1.01, 0.99, 1.0], "harness": [1.1, 1.1, 1.1],
            "no-phases": [1.1, 1.1, 1.1], "no-sampler": [1.0, 1.0, 1.0], "no-progress": [1.1, 1.1, 1.1]}  # fmt: skip
    lines = [*overhead.table(rounds(step)), *overhead.attribution(rounds(step)), *overhead.verdict(rounds(step), 2.0)]
    text = "\n".join(lines)
    assert "harness (defaults)               1.100 [1.100, 1.100]" in text
    assert "rounds 1.010 0.990 1.000" in text  # every round's ratio
    assert "sampler                          1.100" in text and "progress display                 1.000" in text
    assert "step phases                      1.000" in text
    assert "resolution on this machine: ±1.0 % step time" in text
    assert "harness vs bare, step time: +10.0 % (outside the noise floor by 9.0 points)" in text
    assert "sampler +10.0 % (outside the noise floor by 9.0 points); progress display +0.0 % (within" in text
    assert "verdict: over the 2 % target" in text


def test_a_failed_run_stops_the_benchmark_with_its_reason_and_no_ratio(monkeypatch, capsys, tmp_path):
    harness = overhead.Run(1.0, 10.0, 5.0, 0.0, {})
    monkeypatch.setattr(overhead, "harness_run", lambda arm, *a: (harness, tmp_path / "spec.json", "python"))

    def bare_fails(python, spec_path):
        raise overhead.RunFailed("exit 1:\nCUDA OOM")

    monkeypatch.setattr(overhead, "bare_run", bare_fails)
    monkeypatch.setattr(sys, "argv", ["overhead.py", "--rounds", "2", "--warmup", "0"])
    with pytest.raises(SystemExit) as stop:
        overhead.main()
    assert str(stop.value) == "round 1, bare again (noise floor): the run failed, so no ratio: exit 1:\nCUDA OOM"
    assert "ratio to bare" not in capsys.readouterr().out


def test_one_round_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["overhead.py", "--rounds", "1"])
    with pytest.raises(SystemExit):
        overhead.main()
    assert "at least 2" in capsys.readouterr().err


def test_rounds_on_a_shared_machine_are_summarised_again_without_them():
    step = {name: [1.0, 1.0, 1.0] for name in ("bare", "bare2", "harness", "no-phases", "no-sampler", "no-progress")}
    quiet = rounds(step)
    assert overhead.quiet_only(quiet, 2.0) == []  # nobody else computed: nothing to add
    some_shared = rounds(step)
    some_shared[1]["bare2"].others_cores = 0.9
    (line,) = overhead.quiet_only(some_shared, 2.0)
    assert line.startswith("quiet rounds only (2 of 3: other processes at most 0.10 cores): harness 1.000")
    some_shared[0]["harness"].others_cores = 0.9
    assert overhead.quiet_only(some_shared, 2.0) == [
        "quiet rounds only (1 of 3: other processes at most 0.10 cores): too few for a figure"
    ]
