"""`resume=true hydra.sweep.dir=DIR` reruns that sweep's own jobs: the overrides it started with, nothing else."""

import json

import pytest
import yaml

from bench.core import record
from bench.core.errors import UserError
from bench.sweep.app import open_env, resumed


def a_sweep(tmp_path, task, hydra=(), summary_format=record.FORMAT):
    """A sweep directory as bench.run leaves it: Hydra's multirun.yaml, one run with a summary."""
    sweep = tmp_path / "sweep"
    (sweep / "0-trl").mkdir(parents=True)
    overrides = {"hydra": [f"hydra.sweep.dir={sweep}", *hydra], "task": list(task)}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": overrides}}), encoding="utf-8")
    summary = record.to_dict(record.Summary(run="0-trl", status="ok", job_key="k", seed=1)) | {"format": summary_format}
    (sweep / "0-trl" / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return sweep


def test_resume_restores_the_sweeps_own_overrides(tmp_path):
    sweep = a_sweep(tmp_path, ["framework=trl,unsloth", "train.max_steps=5", "resume=true"],
                    hydra=["hydra.searchpath=[file:///x]", "~hydra.sweeper.params.framework"])  # fmt: skip
    assert resumed(["resume=true", f"hydra.sweep.dir={sweep}"]) == [
        "framework=trl,unsloth", "train.max_steps=5", "hydra.searchpath=[file:///x]", "resume=true",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip


def test_a_command_without_resume_is_left_as_it_is():
    argv = ["framework=trl", "resume=false", "hydra.sweep.dir=/x"]
    assert resumed(argv) == argv


def test_resume_refuses_an_override_that_would_mix_another_job_in(tmp_path):
    sweep = a_sweep(tmp_path, ["framework=trl"])
    with pytest.raises(UserError, match=r"reruns .*sweep's own runs, with the overrides it started with "
                       r"\(framework=trl\); train.lr=1e-4 would mix another job into it: drop it, or start a new "
                       r"sweep"):  # fmt: skip
        resumed(["resume=true", f"hydra.sweep.dir={sweep}", "train.lr=1e-4"])


@pytest.mark.parametrize("what", ["missing", "no multirun.yaml"])
def test_resume_of_a_directory_that_is_not_a_sweep_is_one_line(tmp_path, what):
    target = tmp_path / "not-a-sweep"
    if what != "missing":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=rf"{target}: not a sweep directory \(no multirun.yaml"):
        resumed(["resume=true", f"hydra.sweep.dir={target}"])
    assert what == "missing" or (target / "notes.txt").read_text() == "mine"


def test_resume_without_a_sweep_directory_says_how_to_name_one():
    with pytest.raises(UserError, match=r"name it with hydra.sweep.dir=results/<sweep>"):
        resumed(["resume=true"])


def test_resume_of_a_sweep_written_by_an_older_harness_is_refused_and_nothing_changes(tmp_path):
    sweep = a_sweep(tmp_path, ["framework=trl"], summary_format=2)
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=rf"{sweep}: 0-trl was written by an older harness \(summary format 2, this one "
                       rf"writes {record.FORMAT}\).*start a new sweep"):  # fmt: skip
        resumed(["resume=true", f"hydra.sweep.dir={sweep}"])
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before


def test_resume_cannot_restore_a_scrubbed_secret(tmp_path):
    sweep = a_sweep(tmp_path, ["framework=trl", "++framework.env.HF_TOKEN=***"])
    with pytest.raises(UserError, match=r"\+\+framework.env.HF_TOKEN held a secret, scrubbed from its multirun.yaml"):
        resumed(["resume=true", f"hydra.sweep.dir={sweep}"])


def test_framework_env_values_need_no_plus():
    assert open_env(["framework.env.HF_HOME=/h", "++framework.env.X=1", "train.lr=1"]) == [
        "++framework.env.HF_HOME=/h", "++framework.env.X=1", "train.lr=1"]  # fmt: skip



def test_a_framework_env_value_is_set_without_plus_whether_or_not_the_conf_lists_it():
    import subprocess
    import sys

    from tests.conftest import REPO

    cmd = [sys.executable, "-m", "bench.run", "framework=trl", "framework.env.MY_VAR=hello",
           "framework.env.PYTHONPATH=/p", "--cfg", "job"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = yaml.safe_load(proc.stdout)["framework"]["env"]
    assert env["MY_VAR"] == "hello" and env["PYTHONPATH"] == "/p"
