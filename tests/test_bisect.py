"""bench.bisect: a binary search over a framework's commits driven by the gate's verdict (the sweeps faked
here; tests/integration/test_bisect.py runs real ones)."""

import math
import os
import subprocess

import pytest

from bench.sweep import bisect

COMMITS = [f"c{i}" + "0" * 38 for i in range(6)]
GOOD, SLOW = [100.0, 100.2], [66.0, 66.2]  # two seeds each, close enough that no CI reaches the line


def fake(values_of, calls):
    """A measure that returns the given values per commit (None: its runs failed) and counts its calls."""

    def measure(commit, offset):
        calls.append((commit, offset))
        values = values_of[commit]
        if values is None:
            return bisect.Measured(commit, [], "failed: the build broke")
        return bisect.Measured(commit, list(values[offset : offset + 2]) or list(values))

    return measure


def search(values_of):
    calls = []
    b = bisect.Bisect(COMMITS, "tokens_per_s", 0.05, fake(values_of, calls), repeats=2)
    return b, b.run(), calls


def test_the_fourth_commit_is_found_within_log2_steps_plus_the_ends():
    b, first, calls = search({c: GOOD if i < 3 else SLOW for i, c in enumerate(COMMITS)})
    assert first == 3 and len(calls) <= math.ceil(math.log2(len(COMMITS))) + 2
    assert len({c for c, _ in calls}) == len(calls)  # each commit measured once: a noiseless search


def test_a_commit_that_does_not_run_is_skipped_and_named():
    values = {c: GOOD if i < 3 else SLOW for i, c in enumerate(COMMITS)}
    values[COMMITS[2]] = None
    b, first, _ = search(values)
    assert first == 3 and b.skipped == [COMMITS[2]]


def test_a_commit_whose_interval_straddles_the_line_is_measured_again_never_guessed():
    values = {c: GOOD if i < 3 else SLOW for i, c in enumerate(COMMITS)}
    values[COMMITS[3]] = [90.0, 100.0, 93.0, 94.0]  # first two: mean 95, 95 % CI across the 95.95 line
    b, first, calls = search(values)
    assert (COMMITS[3], 2) in calls and b.remeasured == [COMMITS[3]]
    assert first == 3 and b.measured[COMMITS[3]].values == [90.0, 100.0, 93.0, 94.0]


def test_a_bad_that_is_not_bad_stops_in_one_line():
    with pytest.raises(bisect.UserError, match=r"bad=c5\w+ is not bad: tokens_per_s 100.1 against good's 100.1 "
                                               r"\(\+0.0 %; the gate's tolerance is 5 %\)"):
        search(dict.fromkeys(COMMITS, GOOD))
    with pytest.raises(bisect.UserError, match=r"good=c0\w+ did not run ok: failed: the build broke"):
        search({c: None if i == 0 else SLOW for i, c in enumerate(COMMITS)})


def git(repo, *args):
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture
def repo(tmp_path):
    git(tmp_path, "init", "-q", "-b", "main")
    for i in range(4):
        (tmp_path / "f").write_text(str(i))
        git(tmp_path, "add", "f")
        git(tmp_path, "commit", "-q", "-m", f"commit {i}")
    git(tmp_path, "tag", "first", "HEAD~3")
    return tmp_path


def test_the_commits_between_good_and_bad_in_order(repo):
    shas = bisect.commits_between(repo, "first", "main")
    assert len(shas) == 4 and shas[-1] == git(repo, "rev-parse", "main").strip()


@pytest.mark.parametrize("args, message", [
    (["good=main", "bad=main"], "good=main and bad=main: the same ref; a bisect needs two"),
    (["good=nope", "bad=main"], "good=nope: no such commit in"),
    (["good=main", "bad=first"], "good=main is not an ancestor of bad=first"),
    (["good=first", "bad=main", "metric=speed"], "metric=speed: the gate does not know it"),
    (["good=first"], "bad=REF is needed"),
])  # fmt: skip
def test_bad_input_is_one_line_before_any_sweep(repo, capsys, args, message):
    assert bisect.main(["framework=trl", f"framework.source={repo}", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A package index of TRL releases for pip (file names only, as `pip index versions` reads them)."""
    links = tmp_path / "index"
    links.mkdir()
    for release in ("0.23.0", "0.24.0", "0.25.0", "0.25.1", "0.26.0rc1", "0.26.0", "1.0.0"):
        (links / f"trl-{release}-py3-none-any.whl").touch()
    for key, value in {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links)}.items():
        monkeypatch.setenv(key, value)
    return links


def test_without_a_source_the_final_releases_between_good_and_bad_are_searched(index):
    assert bisect.releases_between("trl", "0.24.0", "1.0.0") == ["0.24.0", "0.25.0", "0.25.1", "0.26.0", "1.0.0"]
    history = bisect.history_of(["framework=trl", "train.max_steps=4"], "0.24.0", "0.26.0")
    assert history.kind == "release" and history.override("0.25.1") == "framework.version=0.25.1"


def test_a_release_bisect_prints_the_first_bad_release(index, monkeypatch, tmp_path, capsys):
    calls = []
    slow_from = ["0.24.0", "0.25.0", "0.25.1", "0.26.0", "1.0.0"].index("0.25.1")
    values = {r: GOOD if i < slow_from else SLOW for i, r in enumerate(["0.24.0", "0.25.0", "0.25.1", "0.26.0",
                                                                           "1.0.0"])}  # fmt: skip
    monkeypatch.setattr(bisect, "sweep_measure", lambda *args: fake(values, calls))
    assert bisect.main(["framework=trl", "good=0.24.0", "bad=1.0.0", f"out={tmp_path / 'out'}"]) == 0
    out = capsys.readouterr().out
    assert "bisect: 5 releases from good 0.24.0 to bad 1.0.0" in out
    assert "first bad release: 0.25.1\n  last good 0.25.0: tokens_per_s 100.1 (95 % CI ±" in out, out
    assert f"{len(calls)} releases measured (0.24.0, 1.0.0, " in out


@pytest.mark.parametrize("args, message", [
    (["framework=trl", "good=0.24.0", "bad=0.24.0"], "good=0.24.0 and bad=0.24.0: the same release"),
    (["framework=trl", "good=1.0.0", "bad=0.24.0"], "good=1.0.0 is not older than bad=0.24.0"),
    (["framework=trl", "good=0.9.6", "bad=1.0.0"], "good=0.9.6: trl's runner drives >=0.24 (SFTConfig's"),
    (["framework=trl", "good=0.24.0", "bad=0.27.0"], "bad=0.27.0: no such release of trl on the package index"),
    (["framework=trl", "good=latest", "bad=1.0.0"], "good=latest: not a release number"),
    (["framework=trl,llamafactory", "good=0.24.0", "bad=1.0.0"], "framework=trl,llamafactory: one framework"),
    (["good=0.24.0", "bad=1.0.0"], "framework=NAME (one framework) is needed"),
    (["framework=trl", "framework.version=1.0.0", "good=0.24.0", "bad=1.0.0"], "framework.version: good and bad"),
    (["framework=trl", "good=0.24.0", "bad=1.0.0", "tolerances=/nonexistent.yml"], "tolerances=/nonexistent.yml:"),
])  # fmt: skip
def test_bad_releases_are_one_line_before_any_sweep(index, capsys, args, message):
    assert bisect.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_a_tolerances_file_sets_the_line_as_for_the_gate(tmp_path):
    (tmp_path / "tol.yml").write_text("tokens_per_s: 0.5\n")
    assert bisect.read_rules(str(tmp_path / "tol.yml"), "tokens_per_s") == 0.5
    (tmp_path / "list.yml").write_text("- 0.5\n")
    with pytest.raises(bisect.UserError, match="expected a mapping of metric: rel_tol"):
        bisect.read_rules(str(tmp_path / "list.yml"), "tokens_per_s")


def test_the_summary_names_the_first_bad_commit_both_sides_and_the_cost(repo):
    shas = bisect.commits_between(repo, "first", "main")
    calls = []
    b = bisect.Bisect(shas, "tokens_per_s", 0.05, fake({c: GOOD if i < 2 else SLOW for i, c in enumerate(shas)},
                                                       calls), repeats=2)  # fmt: skip
    first = b.run()
    lines = bisect.summary(b, first, bisect.History("commit", shas, repo), 12.0)
    assert lines[0] == f"first bad commit: {shas[2]} commit 2"
    assert lines[1].startswith(f"  last good {shas[1][:12]}: tokens_per_s 100.1 (95 % CI ±")
    assert lines[2].startswith(f"  first bad {shas[2][:12]}: tokens_per_s 66.1 (95 % CI ±")
    assert lines[3].startswith(f"{len(calls)} commits measured ({shas[0][:7]}") and lines[3].endswith(", 12 s")


def test_train_seed_sets_how_many_seeds_a_step_takes_and_is_not_passed_twice(index, monkeypatch, tmp_path):
    taken = {}

    def measure(history, out, overrides, metric, repeats, log):
        taken.update(overrides=overrides, repeats=repeats)
        return fake(dict.fromkeys(["0.24.0", "0.25.0", "0.25.1", "0.26.0"], GOOD) | {"1.0.0": SLOW}, [])

    monkeypatch.setattr(bisect, "sweep_measure", measure)
    args = ["framework=trl", "good=0.24.0", "bad=1.0.0", "train.seed=1,2,3", "train.max_steps=4", f"out={tmp_path}"]
    assert bisect.main(args) == 0
    assert taken == {"overrides": ["framework=trl", "train.max_steps=4"], "repeats": 3}


def test_good_and_bad_given_as_sweeps_are_neither_swept_nor_measured_again():
    """The gate's sweeps as the ends, one run each (a CI of one run is unknown): only the middle is swept."""
    calls = []
    values = {c: GOOD if i < 3 else SLOW for i, c in enumerate(COMMITS)}
    given = {COMMITS[0]: bisect.Measured(COMMITS[0], [100.0]), COMMITS[-1]: bisect.Measured(COMMITS[-1], [66.0])}
    b = bisect.Bisect(COMMITS, "tokens_per_s", 0.05, fake(values, calls), repeats=2, given=given)
    assert b.run() == 3
    assert {c for c, _ in calls} <= set(COMMITS[1:-1]) and not b.remeasured
    assert len(calls) <= math.ceil(math.log2(len(COMMITS)))


def test_a_step_that_ran_another_job_stops_the_search_in_one_line():
    def measure(commit, offset):
        job = "b" if commit == COMMITS[2] else "a"
        return bisect.Measured(commit, list(GOOD), sweeps=[f"sweep-{commit[:2]}"], job=job)

    b = bisect.Bisect(COMMITS, "tokens_per_s", 0.05, measure, repeats=2)
    with pytest.raises(bisect.UserError, match=r"sweep-c2: job b, not the job a that c0\w+ ran; a bisect compares"):
        b.get(COMMITS[0]), b.get(COMMITS[2])


def test_a_given_sweep_must_have_installed_its_end(repo, tmp_path, capsys):
    from tests.test_findings import measured, write_run
    from tests.test_history import with_source

    shas = bisect.commits_between(repo, "first", "main")
    sweeps = {}
    for side, sha in (("good", shas[0]), ("bad", shas[1])):  # bad's sweep installed the commit after good
        sweeps[side] = tmp_path / side
        write_run(sweeps[side], "0-trl", "trl", version=f"1.16.0 @ {sha[:7]}", **measured(100.0, 6.0, 2.0))
        with_source(sweeps[side] / "0-trl", repo, sha)
    history = bisect.History("commit", shas, repo)
    assert bisect.given_sweep(str(sweeps["good"]), "good", shas[0], history, "tokens_per_s").values == [100.0]
    args = ["framework=trl", f"framework.source={repo}", "good=first", "bad=main", f"out={tmp_path / 'out'}",
            *(f"{side}-sweep={path}" for side, path in sweeps.items())]  # fmt: skip
    assert bisect.main(args) == 2
    err = capsys.readouterr().err
    assert err == f"error: bad-sweep={sweeps['bad']}: its ok runs installed {shas[1]}, not bad={shas[-1][:12]}\n"
    assert not (tmp_path / "out").exists()  # one line before any sweep
