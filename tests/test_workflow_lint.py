"""The GPU workflow and the example workflow for a framework's repository pass actionlint (installed with the
`test` extra, through `lint`); the workflow runs this repository's action, whose steps run the script that
tests/integration/test_workflow.py and test_action.py exercise on CPU."""

import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "gpu-regression.yml"
EXAMPLE = REPO / "docs" / "examples" / "framework-gate.yml"
ACTION = REPO / "action.yml"


@pytest.mark.parametrize("workflow", [WORKFLOW, EXAMPLE], ids=["gpu-regression", "framework-gate-example"])
def test_actionlint_passes(workflow):
    actionlint = Path(sysconfig.get_path("scripts")) / "actionlint"
    assert actionlint.exists(), "actionlint is missing: pip install -e '.[test]'"
    # Run from the repository so it reads .github/actionlint.yaml (the self-hosted runner's `gpu` label); it
    # reads action.yml too, for the workflow's `uses: ./`.
    proc = subprocess.run([str(actionlint), str(workflow)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_workflow_runs_this_repositorys_action_with_a_read_only_token():
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert workflow["permissions"] == {"contents": "read", "actions": "read"}
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(step.get("uses") == "./" and step["with"]["candidate"] == "release" for step in steps), steps


def test_the_action_runs_the_tested_gate_script():
    action = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    runs = [step.get("run", "") for step in action["runs"]["steps"]]
    assert action["runs"]["using"] == "composite"
    assert any('"$GITHUB_ACTION_PATH/scripts/gpu_regression.sh"' in run for run in runs), runs


def test_the_gpu_workflow_sweeps_every_registered_framework():
    """No list of its own: an empty `frameworks` leaves bench.run's default sweep, every conf/framework/ file."""
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    (gate,) = [s for job in workflow["jobs"].values() for s in job["steps"] if s.get("uses") == "./"]
    assert gate["with"]["frameworks"] == "" and gate["with"]["candidate"] == "release"
    assert '${FRAMEWORKS:+"framework=$FRAMEWORKS"}' in ACTION.read_text(encoding="utf-8")
