"""The GPU workflow passes actionlint (installed with the `test` extra, through `lint`) and runs the script
that tests/integration/test_workflow.py exercises on CPU."""

import subprocess
import sysconfig
from pathlib import Path

import yaml

from tests.conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "gpu-regression.yml"


def test_actionlint_passes_on_the_gpu_workflow():
    actionlint = Path(sysconfig.get_path("scripts")) / "actionlint"
    assert actionlint.exists(), "actionlint is missing: pip install -e '.[test]'"
    # Run from the repository so it reads .github/actionlint.yaml (the self-hosted runner's `gpu` label).
    proc = subprocess.run([str(actionlint), str(WORKFLOW)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_workflow_runs_the_tested_gate_script_with_a_read_only_token():
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert workflow["permissions"] == {"contents": "read", "actions": "read"}
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(run.lstrip().startswith("scripts/gpu_regression.sh ") for run in steps), steps
