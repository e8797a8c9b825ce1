"""The README's "commands people use most", run as written (short runs on the embedded default), each doing
what its comment beside it says."""

import json
import re
import shutil

import pandas as pd
import pytest

from bench.core import results
from tests.conftest import readme_commands, run_dirs, run_readme

pytestmark = pytest.mark.integration
SHORT = ("train.max_steps=4", "eval.enabled=false")  # what the README leaves to its defaults, kept short here
COMMANDS = [
    "python -m bench.run framework=trl,llamafactory train.seed=1,2,3",
    "python -m bench.run framework=trl framework.version=0.24.0,1.16.0",
    "python -m bench.report results/<sweep> --baseline llamafactory",
    "python -m bench.compare results/<baseline> results/<candidate>",
    "python -m bench.run resume=true hydra.sweep.dir=results/<sweep>",
]


def test_the_readme_block_is_the_one_tested_here():
    assert [command for command, _ in readme_commands("## The commands people use most")] == COMMANDS


def test_the_main_job_runs_every_framework_and_records_unsloth_as_skipped_on_a_cpu(main_job):
    tmp, proc = main_job  # the set-up command as written, its runs short (tests/integration/conftest.py)
    assert proc.returncode == 0, proc.stderr[-3000:]  # ok or skipped with its reason: exit 0
    statuses = {s["framework"]: s["status"] for s in (json.loads((d / results.SUMMARY).read_text())
                                                       for d in run_dirs(tmp))}  # fmt: skip
    assert statuses == {"trl": "ok", "llamafactory": "ok", "axolotl": "ok", "unsloth": "skipped"}


@pytest.fixture(scope="module")
def repeats(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("readme") / "repeats"
    proc = run_readme(COMMANDS[0], *SHORT, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep, proc


def test_repeats_give_every_ratio_a_95_ci(repeats):
    assert "every ratio with a 95 % CI" in dict(readme_commands("## The commands people use most"))[COMMANDS[0]]
    _, proc = repeats
    finding = next(line for line in proc.stdout.splitlines() if line.startswith("- llamafactory "))
    assert "3 seed pairs" in finding and re.search(r"tokens/s [\d.]+x \(95 % CI [\d.]+–[\d.]+\)", finding), finding


def test_two_releases_of_one_framework_are_two_systems(tmp_path):
    assert "two releases of one framework" in dict(readme_commands("## The commands people use most"))[COMMANDS[1]]
    proc = run_readme(COMMANDS[1], *SHORT, f"hydra.sweep.dir={tmp_path / 'releases'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "releases" / "runs.csv")
    assert sorted(table["system"]) == ["trl 0.24.0", "trl 1.16.0"]


def test_a_report_rebuilt_with_another_baseline_prints_its_findings(repeats):
    assert "another baseline" in dict(readme_commands("## The commands people use most"))[COMMANDS[2]]
    proc = run_readme(COMMANDS[2], paths={"sweep": repeats[0]})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("Findings:") and "- trl 1.16.0 vs llamafactory 0.9.5" in proc.stdout
    assert f"report.html: {repeats[0] / 'report.html'}" in proc.stdout


def test_the_gate_exits_1_on_a_regression(repeats, tmp_path):
    assert "exit 1 on a regression" in dict(readme_commands("## The commands people use most"))[COMMANDS[3]]
    baseline = shutil.copytree(repeats[0], tmp_path / "baseline")
    for path in baseline.glob(f"*/{results.SUMMARY}"):  # a baseline 100x faster: no machine's load makes that up
        summary = json.loads(path.read_text(encoding="utf-8"))
        summary["metrics"]["tokens_per_s"] *= 100
        path.write_text(json.dumps(summary), encoding="utf-8")
    proc = run_readme(COMMANDS[3], paths={"baseline": baseline, "candidate": repeats[0]})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_resume_reruns_what_did_not_finish_ok(repeats, tmp_path):
    assert "rerun what did not finish ok" in dict(readme_commands("## The commands people use most"))[COMMANDS[4]]
    sweep = shutil.copytree(repeats[0], tmp_path / "sweep")
    before = {d.name: json.loads((d / results.SUMMARY).read_text()) for d in run_dirs(tmp_path)}
    target = next(name for name in before if name.endswith("llamafactory"))
    (sweep / target / results.SUMMARY).write_text(json.dumps(before[target] | {"status": "failed"}), encoding="utf-8")
    proc = run_readme(COMMANDS[4], paths={"sweep": sweep})
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = {d.name: json.loads((d / results.SUMMARY).read_text()) for d in run_dirs(tmp_path)}
    assert sorted(after) == sorted(before)  # the sweep's own six runs, none added
    assert [r for r in after if after[r]["started_at"] != before[r]["started_at"]] == [target]
    assert after[target]["status"] == "ok" and proc.stderr.count("ok in an earlier attempt") == 5
