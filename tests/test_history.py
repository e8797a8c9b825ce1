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


def test_commits_of_a_local_repository_are_in_its_history_order_whatever_order_the_sweeps_come_in(tmp_path):
    """As a bisect leaves them: one sweep per commit, measured in search order, not history order."""
    from tests.test_bisect import git

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for i in range(4):
        (repo / "f").write_text(str(i))
        git(repo, "add", "f")
        git(repo, "commit", "-q", "-m", f"commit {i}")
    shas = git(repo, "rev-list", "--reverse", "HEAD").split()
    sweeps = []
    for n, i in enumerate([0, 3, 1, 2]):  # good, bad, then the middle ones
        sweep = tmp_path / f"{n}-{shas[i][:12]}"
        write_run(sweep, "0-trl", "trl", version=f"1.16.0 @ {shas[i][:7]}", **measured(100.0 - 30 * (i >= 2), 6.0, 2))
        with_source(sweep / "0-trl", repo, shas[i])
        sweeps.append(sweep)
    (series, *_) = history.history(sweeps, ["tokens_per_s"])
    assert [p.system for p in series.points] == [f"trl 1.16.0 @ {sha[:7]}" for sha in shas]
    assert series.regressions() == [(f"trl 1.16.0 @ {shas[1][:7]}", f"trl 1.16.0 @ {shas[2][:7]}")]


def with_source(run_dir, repo, sha):
    import json

    summary = json.loads((run_dir / "summary.json").read_text())
    summary["source"] = {"given": f"git+file://{repo}@{sha}", "path": "/cache/x", "identity": sha, "commit": sha,
                         "dirty": False, "label": sha[:7]}  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_a_release_sweep_of_three_or_more_has_its_history_in_the_report(tmp_path):
    from bench.analysis import report

    sweep = tmp_path / "releases"
    for i, (version, tps) in enumerate([("1.2.0", 100.0), ("0.24.0", 101.0), ("1.16.0", 60.0)]):
        for seed in (1, 2):
            write_run(sweep, f"{2 * i + seed - 1}-trl", "trl", version=version, seed=seed,
                      **measured(tps + seed, 600.0, 2.0))  # fmt: skip
    r = report.compose(sweep)
    title, _, table = next(s for s in r.content if s[0] == "History")
    tps = table[table["metric"] == "tokens_per_s (tokens/s)"]
    assert list(tps["system"]) == ["trl 0.24.0", "trl 1.2.0", "trl 1.16.0"]
    assert list(tps["verdict"]) == ["", "ok", "regressed"] and list(tps["runs"]) == ["2", "2", "2"]
    assert "history.svg" in r.figures and "![history.svg](history.svg)" in report.markdown(r)
