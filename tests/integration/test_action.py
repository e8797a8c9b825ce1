"""The action a framework's repository calls (action.yml), rehearsed on CPU by running its steps as a runner
would: TRL's own sdist of the pinned release as the repository, its base commit as the baseline, a pull
request of two commits, the second slowing every training step, as the candidate (a regression of tokens/s,
exit 1, and the bisect on regression, starting from the gate's two sweeps, names the second commit), then the
base commit's checkout against the first call's baseline sweep of that commit (exit 0, and no environment
rebuilt: it is known by its commit)."""

import json
import os
import re
import subprocess

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.conftest import git, slowed_trainer  # the trl_repo fixture is there too

pytestmark = pytest.mark.integration

ACTION = yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))
# Appended to TRL's trainer module: every training step sleeps first, far longer than a tiny model's step
# (0.1-2 s on a 2-core machine, idle or busy), so the slowed checkout's tokens/s is below 2/17 of its base's.
SLOW = slowed_trainer(15.0)


def run_action(workspace, runner_temp, inputs: dict[str, str]):
    """Each `run` step of action.yml in bash, as a runner runs a composite action: its `${{ }}` expressions
    replaced, GITHUB_* variables set, in the calling repository's workspace. Returns (exit code of the first
    step that failed or 0, combined output, outputs, step summary)."""
    defaults = {name: spec.get("default", "") for name, spec in ACTION["inputs"].items()}
    values = {f"inputs.{k}": v for k, v in (defaults | inputs).items()}
    values |= {"runner.temp": str(runner_temp), "github.workspace": str(workspace)}
    output, summary = runner_temp / "output", runner_temp / "summary.md"
    for path in (output, summary):  # a runner gives each job its own files
        path.unlink(missing_ok=True)
    env = os.environ | {"GITHUB_ACTION_PATH": str(REPO), "RUNNER_TEMP": str(runner_temp), "GITHUB_OUTPUT": str(output),
                        "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKSPACE": str(workspace), "COLUMNS": "200"}
    log = []
    for step in ACTION["runs"]["steps"]:
        step_env = {k: re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", lambda m: values[m[1]], str(v))
                    for k, v in step.get("env", {}).items()}  # fmt: skip
        proc = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=workspace, capture_output=True, text=True,
                              timeout=3600, env=env | step_env)  # fmt: skip
        log.append(proc.stdout + proc.stderr)
        if proc.returncode:
            break
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines()) if output.exists() else {}
    return proc.returncode, "".join(log), outputs, summary.read_text() if summary.exists() else ""


def test_the_action_gates_a_framework_repository_on_its_own_source_and_bisects_the_regression(trl_repo, tmp_path):
    # Two sweeps of one checkout on a shared machine differed by 5x in tokens/s (1,135 vs 218): only a drop past
    # 85 % is a regression here, which 15 s more per step is and machine load alone is not.
    (tmp_path / "tolerances.yml").write_text("tokens_per_s: 0.85\n")
    inputs = {"frameworks": "trl", "overrides": "train.max_steps=3 skip_steps=1 eval.enabled=false",
              "baseline-ref": "main", "bisect": "true",
              "tolerances": str(tmp_path / "tolerances.yml")}  # fmt: skip
    git(trl_repo, "checkout", "-q", "-b", "pull-request")
    (trl_repo / "PULL_REQUEST.txt").write_text("a change that costs nothing\n")
    git(trl_repo, "add", "-A")
    git(trl_repo, "commit", "-q", "-m", "a harmless change")
    trainer = trl_repo / "trl" / "trainer" / "sft_trainer.py"
    trainer.write_text(trainer.read_text(encoding="utf-8") + SLOW, encoding="utf-8")
    git(trl_repo, "commit", "-q", "-am", "every training step sleeps")
    main, harmless, slow = git(trl_repo, "rev-list", "--reverse", "HEAD").split()
    candidate = tmp_path / "slow" / "candidate"
    rc, log, outputs, summary = run_action(trl_repo, tmp_path / "runner", inputs | {
        "baseline-dir": str(tmp_path / "slow" / "baseline"), "results": str(candidate)})
    assert rc == 1 and outputs.get("verdict") == "regression", log[-5000:]
    assert re.search(r"\| tokens_per_s \| .* \| regressed \|", summary), summary
    # The base commit and the pull request's head: one environment each at most, none twice (their commits are
    # the same in every session, so an environment built before is found by its key).
    built = re.findall(r"building the trl @ (\S+) environment", log)
    assert len(built) == len(set(built)) <= 2, built
    (summary_json,) = candidate.glob("*/summary.json")
    run = json.loads(summary_json.read_text())
    assert run["source"]["commit"] == slow and run["framework_version"] == f"1.16.0 @ {slow[:7]}"
    assert outputs.get("first-bad") == slow, summary
    assert f"### sftbench: bisect from {main} to {slow}" in summary
    assert f"first bad commit: {slow} every training step sleeps" in summary, summary
    assert f"from the sweeps given, not swept again: {main[:12]} {tmp_path / 'slow' / 'baseline'}, " in summary
    assert_bisect_swept_only_the_commit_between(tmp_path / "slow" / "candidate-bisect", harmless)

    git(trl_repo, "checkout", "-q", "main")  # the base commit against the first call's sweep of it
    rc, log, outputs, summary = run_action(trl_repo, tmp_path / "runner", inputs | {
        "baseline-dir": str(tmp_path / "slow" / "baseline"), "results": str(tmp_path / "same" / "candidate")})
    assert rc == 0 and outputs.get("verdict") == "ok", log[-5000:]
    assert "building the trl" not in log  # known by its commit: the environment built for it is reused
    assert "no regression" in summary and "bisect" not in summary and "first-bad" not in outputs


def assert_bisect_swept_only_the_commit_between(out, between):
    """The bisect's own sweeps: the commit between the gate's two, whose sweeps were its ends."""
    from bench.core import record

    swept = set()
    for sweep in out.iterdir():
        runs, _ = record.load_sweep(sweep)
        assert runs and all(r.summary.status == "ok" for r in runs), sweep
        swept |= {r.summary.source["commit"] for r in runs}
    assert swept == {between}, swept
