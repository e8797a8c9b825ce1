import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from bench import envs
from bench.models import cache_root
from bench.run import framework_requirements
from tests.conftest import REPO


@pytest.fixture(scope="session")
def trl_python() -> Path:
    """The default TRL environment's interpreter, built on first use like a run would."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["framework=trl"])
    fw = cfg.framework
    requirements = framework_requirements(fw, list(cfg.worker_requirements))
    python, _ = envs.ensure_env(envs.env_dir(cache_root(), fw.name, str(fw.version), requirements), requirements)
    return python


@pytest.fixture
def in_trl_env(trl_python):
    """Run a Python snippet in the TRL environment with the repo importable; returns its stdout."""

    def run(code: str) -> str:
        proc = subprocess.run(
            [str(trl_python), "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    return run
