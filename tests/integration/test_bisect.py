"""bench.bisect and bench.history over a framework's real commits: TRL's sdist committed as a repository of
six commits, the fourth slowing every training step; the first is the action test's release commit, whose
environment the session builds once."""

import math
import re
import subprocess
import sys

import pytest

from bench.analysis import history
from tests.conftest import REPO
from tests.integration.conftest import git, slowed_trainer

pytestmark = pytest.mark.integration
# Each training step sleeps 1 s first: far above a tiny model's step on a busy 2-core machine (0.1-0.5 s), so
# the slowed commits lose two thirds of their tokens/s or more.
SLOW = slowed_trainer(1.0)
REPEATS = 2
# The line a step must fall below to be bad: half of good's tokens/s. Commits that differ in a notes file
# measured up to 10 % apart in the mean of two seeds on a shared 2-core machine (single runs 41 %), past the
# gate's default 5 %, and led a bisect to the wrong commit; a drop past half is the sleep, not the machine.
TOLERANCE = 0.5


@pytest.fixture(scope="module")
def six_commits(trl_repo):
    notes = trl_repo / "BISECT_NOTES.txt"
    for i in range(2, 7):
        if i == 4:
            with open(trl_repo / "trl" / "trainer" / "sft_trainer.py", "a", encoding="utf-8") as f:
                f.write(SLOW)
        else:
            notes.write_text(f"commit {i}\n")
        git(trl_repo, "add", "-A")
        git(trl_repo, "commit", "-q", "-m", f"commit {i}" + (": every training step sleeps" if i == 4 else ""))
    return trl_repo, git(trl_repo, "rev-list", "--reverse", "HEAD").split()


@pytest.fixture(scope="module")
def bisected(six_commits, tmp_path_factory):
    repo, shas = six_commits
    out = tmp_path_factory.mktemp("bisect")
    tolerances = tmp_path_factory.mktemp("tolerances") / "tolerances.yml"
    tolerances.write_text(f"tokens_per_s: {TOLERANCE}\n")
    cmd = [sys.executable, "-m", "bench.bisect", "framework=trl", f"framework.source={repo}", f"good={shas[0]}",
           f"bad={shas[-1]}", f"repeats={REPEATS}", f"out={out}", f"tolerances={tolerances}", "train.max_steps=12",
           "eval.enabled=false"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    return proc, shas, out


def test_bisect_prints_the_fourth_commit_within_log2_steps_plus_its_repeats(bisected):
    proc, shas, _ = bisected
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"first bad commit: {shas[3]} commit 4: every training step sleeps" in proc.stdout, proc.stdout
    measured = int(re.search(r"^(\d+) commits measured", proc.stdout, re.M).group(1))
    assert measured <= math.ceil(math.log2(len(shas))) + REPEATS
    assert re.search(rf"last good {shas[2][:12]}: tokens_per_s [\d.]+ \(", proc.stdout), proc.stdout


def test_bisect_reused_every_environment_it_built(bisected):
    """A commit's environment is built at most once: a commit measured again (or its second seed) finds it."""
    from bench.core import record

    _, shas, out = bisected
    builds: dict[str, int] = {}
    for sweep in out.iterdir():
        runs, _ = record.load_sweep(sweep)
        assert runs, sweep
        commit = next(s for s in shas if sweep.name.endswith(s[:12]))
        builds[commit] = builds.get(commit, 0) + sum("env_build_s" in r.summary.metrics for r in runs)
    assert builds and all(n <= 1 for n in builds.values()), builds


def test_history_over_the_measured_commits_marks_the_step_from_the_third_to_the_fourth(bisected, capsys, tmp_path):
    _, shas, out = bisected
    sweeps = [p for p in out.iterdir() if p.is_dir()]  # in no particular order: history orders them by git
    assert history.main([*map(str, sweeps), "--metric", "tokens_per_s", "--out", str(tmp_path)]) == 1
    printed = capsys.readouterr().out
    assert f"tokens_per_s: trl 1.16.0 @ {shas[2][:7]} -> trl 1.16.0 @ {shas[3][:7]}" in printed, printed
