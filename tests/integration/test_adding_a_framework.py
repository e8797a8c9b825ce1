"""Adding a framework is what docs/adding-a-framework.md says it is: a runner module and its
conf/framework/<name>.yaml, and no other file.

The test double tests/doubles/misbehave.py is added here the way a real framework is: its conf file
(tests/conf/framework/misbehave.yaml, unchanged) dropped into a copy of the package's conf/ and nothing else.
It is then registered, in the default sweep, composed, dispatched to its runner and run by a real worker.
"""

import json
import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from bench.core import config, results
from bench.worker import runners
from tests.conftest import REPO, run_dirs

NAME = "misbehave"
# Every file adding the double took; docs/adding-a-framework.md counts the same two.
ADDED = ["tests/doubles/misbehave.py", "tests/conf/framework/misbehave.yaml"]


@pytest.fixture
def conf(tmp_path, monkeypatch):
    """The package's conf/ with the double's conf file added, as bench.core.config sees it."""
    conf = tmp_path / "conf"
    shutil.copytree(config.conf_dir(), conf)
    shutil.copy(REPO / ADDED[1], conf / "framework" / f"{NAME}.yaml")
    monkeypatch.setattr(config, "conf_dir", lambda: conf)
    monkeypatch.setenv("SFTBENCH_TEST_REPO", str(REPO))
    return conf


def test_no_harness_file_knows_of_it():
    assert all((REPO / path).is_file() for path in ADDED)
    harness = [*(REPO / "bench").rglob("*.py"), *(REPO / "conf").rglob("*.yaml"), REPO / "pyproject.toml"]
    assert [p for p in harness if NAME in p.read_text()] == []
    assert NAME not in config.frameworks()  # the real registry: the double's conf file is not in conf/


def test_its_conf_file_registers_it_and_puts_it_in_the_default_sweep(conf):
    assert config.frameworks()[NAME]["runner"] == "tests.doubles.misbehave"
    assert NAME in config.sweep_frameworks(config.default_baseline()).split(",")
    config.register_resolvers()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        default = compose(config_name="config", return_hydra_config=True)
    assert NAME in str(default.hydra.sweeper.params.framework).split(",")


def test_it_composes_and_is_dispatched_to_its_runner(conf, tmp_path):
    from bench.sweep.app import job_spec

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = config.validate(compose(config_name="config", overrides=[f"framework={NAME}", f"cache_dir={tmp_path}"]))
    spec = job_spec(cfg, tmp_path / "run")
    runner = runners.load(spec.runner)  # what the worker does, inside the framework's environment
    assert runner.unsupported_reason(spec) is None
    assert runner.translate(spec, precision="fp32", on_gpu=False) == {"mode": "raise"}


@pytest.mark.integration
def test_it_runs_through_bench_run_found_by_its_conf_file_alone(conf, tmp_path, trl_python):
    """No hydra.searchpath: the sweep app finds the framework in its conf/ like any other (the double needs
    torch, so it runs in the TRL environment)."""
    code = (
        "import pathlib, runpy, sys\n"
        "import bench.core.config\n"
        f"bench.core.config.conf_dir = lambda: pathlib.Path({str(conf)!r})\n"
        "sys.argv[0] = 'bench.run'\n"
        "runpy.run_module('bench.run', run_name='__main__', alter_sys=True)\n"
    )
    out = tmp_path / "out"
    overrides = [f"results_dir={out}", f"framework={NAME}", f"framework.python={trl_python}"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *overrides, "framework.env.MISBEHAVE=ok", "eval.enabled=false"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = run_dirs(out)
    summary = json.loads((run / results.SUMMARY).read_text())
    assert summary["framework"] == NAME and summary["status"] == "ok", summary.get("reason")
