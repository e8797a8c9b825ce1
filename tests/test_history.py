"""bench.history: one job across releases or commits, the steps the gate calls regressions marked."""

import pytest

from bench.analysis import history
from tests.test_findings import measured, write_run

COMMITS = [f"1.16.0 @ c{i}" for i in range(1, 7)]


@pytest.fixture
def commits(tmp_path):
    """Six commits, two seeds each; the fourth slows every step by a third."""
    sweep = tmp_path / "sweep"
    n = 0
    for i, version in enumerate(COMMITS, start=1):
        for seed in (1, 2):
            tps = (100.0 if i < 4 else 66.0) + seed
            write_run(sweep, f"{n}-trl", "trl", version=version, seed=seed, **measured(tps, 600.0, 2.0))
            n += 1
    return sweep


def test_the_step_from_the_third_commit_to_the_fourth_is_marked(commits, capsys):
    assert history.main([str(commits), "--metric", "tokens_per_s"]) == 1
    out = capsys.readouterr().out
    assert "regression steps: tokens_per_s: trl 1.16.0 @ c3 -> trl 1.16.0 @ c4" in out
    rows = [line for line in out.splitlines() if line.startswith("| trl")]
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows] == [f"trl {c}" for c in COMMITS]  # given order
    assert "**regressed**" in rows[3] and all("regressed" not in r for r in rows[:3] + rows[4:])
    assert (commits / "history.md").exists() and (commits / "history.svg").read_text().startswith("<?xml")


def test_releases_are_in_version_order(tmp_path):
    sweep = tmp_path / "releases"
    for i, version in enumerate(["1.16.0", "0.24.0", "1.2.0"]):
        write_run(sweep, f"{i}-trl", "trl", version=version, **measured(100.0, 600.0, 2.0))
    (series,) = history.history([sweep], ["tokens_per_s"])
    assert [p.system for p in series.points] == ["trl 0.24.0", "trl 1.2.0", "trl 1.16.0"]
    assert series.steps == ["ok", "ok"]


@pytest.mark.parametrize("case, message", [
    ("jobs", "a history is of one job; these sweeps ran 2: a, b"),
    ("metric", "--metric speed: not a gated metric; gated: tokens_per_s"),
    ("none", "no run finished ok, so there is no history"),
])  # fmt: skip
def test_input_that_makes_no_history_is_one_line(tmp_path, capsys, case, message):
    sweep = tmp_path / case
    write_run(sweep, "0-trl", "trl", job_key="a", status="failed" if case == "none" else "ok",
              **measured(100.0, 600.0, 2.0))  # fmt: skip
    write_run(sweep, "1-trl", "trl", job_key="b" if case == "jobs" else "a", version="1.17.0",
              **measured(90.0, 600.0, 2.0))  # fmt: skip
    if case == "none":
        (sweep / "1-trl" / "summary.json").unlink()
    args = [str(sweep), *(["--metric", "speed"] if case == "metric" else [])]
    assert history.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
