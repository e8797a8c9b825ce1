"""The regression gate's exit codes on an improved, an equal and a regressed candidate."""

import json
import shutil
from pathlib import Path

import pytest

from bench.analysis import gate as compare
from bench.core import results

FIXTURE = Path(__file__).parent / "fixtures" / "h200-sweep"


def candidate(tmp_path, name="cand", **changes):
    """A copy of the recorded sweep with the TRL run's metrics (or status) changed."""
    d = tmp_path / name
    shutil.copytree(FIXTURE, d)
    path = d / "0-trl" / results.SUMMARY
    summary = json.loads(path.read_text())
    status = changes.pop("status", None)
    summary["metrics"] |= changes
    if status:
        summary["status"] = status
    results.write_json_atomic(path, summary)
    return d


def test_equal_candidate_passes(tmp_path):
    assert compare.main([str(FIXTURE), str(shutil.copytree(FIXTURE, tmp_path / "again"))]) == 0


def test_the_same_sweep_as_baseline_and_candidate_is_refused(capsys):
    assert compare.main([str(FIXTURE), str(FIXTURE / ".." / FIXTURE.name)]) == 2
    err = capsys.readouterr().err
    assert "is both the baseline and the candidate" in err and len(err.strip().splitlines()) == 1


def test_improved_candidate_passes(tmp_path):
    assert compare.main([str(FIXTURE), str(candidate(tmp_path, tokens_per_s=3338 * 1.2, peak_vram_mb=5000))]) == 0


def test_within_tolerance_passes(tmp_path):
    assert compare.main([str(FIXTURE), str(candidate(tmp_path, tokens_per_s=3338 * 0.97))]) == 0


@pytest.mark.parametrize(
    "change",
    [{"tokens_per_s": 3338 * 0.9}, {"peak_vram_mb": 5844 * 1.1}, {"final_loss": 11.5}, {"status": "failed"}],
)
def test_regressed_candidate_fails_the_gate(tmp_path, change):
    assert compare.main([str(FIXTURE), str(candidate(tmp_path, **change))]) == 1


def test_markdown_summary_says_why(tmp_path):
    summary = tmp_path / "summary.md"
    code = compare.main([str(FIXTURE), str(candidate(tmp_path, tokens_per_s=1000.0)), "--summary", str(summary)])
    text = summary.read_text()
    assert code == 1 and "regression" in text and "| tokens_per_s | 3338 | 1000 | -70.0 % | 5 % | regressed |" in text


@pytest.mark.parametrize("which", ["missing", "empty"])
def test_unusable_input_exits_2(tmp_path, which):
    target = tmp_path / "nope" if which == "missing" else tmp_path
    assert compare.main([str(FIXTURE), str(target)]) == 2


def test_nothing_in_common_exits_2_naming_the_fields_that_differ(tmp_path, capsys):
    other = candidate(tmp_path)
    for run in other.iterdir():
        if run.is_dir():
            summary = json.loads((run / results.SUMMARY).read_text())
            results.write_json_atomic(run / results.SUMMARY, summary | {"job_key": "another-job"})
            spec = json.loads((run / results.SPEC).read_text())
            spec["train"]["lr"] = 1e-3
            results.write_json_atomic(run / results.SPEC, spec)
    assert compare.main([str(FIXTURE), str(other)]) == 2
    err = capsys.readouterr().err
    assert "trl 0-trl → 0-trl differ in train.lr: 0.002 → 0.001" in err and err.count("\n") == 1


def test_the_gate_prints_its_verdict(tmp_path, capsys):
    assert compare.main([str(FIXTURE), str(candidate(tmp_path, "same"))]) == 0
    assert "verdict: no regression" in capsys.readouterr().out
    assert compare.main([str(FIXTURE), str(candidate(tmp_path, tokens_per_s=1000.0))]) == 1
    assert "verdict: regression: 1 of" in capsys.readouterr().out


@pytest.mark.parametrize("tolerances", ["tokens_per_sec: 0.5\n", "tokens_per_s: {better: lower, rel_tol: 0.5}\n",
                                        "steps: 0.1\n", "tokens_per_s: fast\n"])  # fmt: skip
def test_a_tolerance_that_cannot_be_checked_exits_2(tmp_path, tolerances, capsys):
    path = tmp_path / "tol.yaml"
    path.write_text(tolerances)
    assert compare.main([str(FIXTURE), str(candidate(tmp_path)), "--tolerances", str(path)]) == 2
    assert "tokens_per_s" in capsys.readouterr().err or "steps" in tolerances


def test_a_comparison_that_checks_nothing_exits_2(tmp_path, capsys):
    other = candidate(tmp_path)
    for run in ("0-trl", "1-unsloth"):
        path = FIXTURE / run / results.SUMMARY
        stripped = json.loads(path.read_text()) | {"metrics": {}}
        (tmp_path / "base" / run).mkdir(parents=True)
        results.write_json_atomic(tmp_path / "base" / run / results.SUMMARY, stripped)
    assert compare.main([str(tmp_path / "base"), str(other)]) == 2
    assert "no check was made" in capsys.readouterr().err


def test_runs_are_matched_by_job_key_not_by_the_first_row_of_a_framework(tmp_path):
    """Two TRL runs of different jobs (checkpointing on and off) in each sweep: each meets its own."""
    def sweep(name, slow_one):
        d = tmp_path / name
        for i, (key, tps) in enumerate([("ckpt-on", 100.0), ("ckpt-off", 200.0)]):
            (d / f"{i}-trl").mkdir(parents=True)
            tps = tps * 0.5 if key == slow_one else tps
            results.write_json_atomic(d / f"{i}-trl" / results.SUMMARY, {
                "run": f"{i}-trl", "framework": "trl", "job_key": key, "seed": 42, "status": "ok",
                "metrics": {"tokens_per_s": tps}})  # fmt: skip
        return d

    base = sweep("base", slow_one=None)
    assert compare.main([str(base), str(sweep("same", slow_one=None))]) == 0
    # The checkpointing-off run got slower: caught against its own job, not averaged or paired with the other.
    assert compare.main([str(base), str(sweep("slow", slow_one="ckpt-off"))]) == 1


def test_tolerances_are_configurable(tmp_path):
    loose = tmp_path / "loose.yaml"
    loose.write_text("tokens_per_s: {better: higher, rel_tol: 0.5}\n")
    assert (
        compare.main([str(FIXTURE), str(candidate(tmp_path, tokens_per_s=3338 * 0.7)), "--tolerances", str(loose)]) == 0
    )


@pytest.mark.parametrize("damage", ["truncated", "gone"])
def test_a_baseline_run_without_a_readable_candidate_fails_the_gate_by_name(tmp_path, damage, capsys):
    other = candidate(tmp_path)
    if damage == "gone":
        shutil.rmtree(other / "1-unsloth")
    else:
        (other / "1-unsloth" / results.SUMMARY).write_text('{"run": "1-unsl')
    summary = tmp_path / "summary.md"
    assert compare.main([str(FIXTURE), str(other), "--summary", str(summary)]) == 1
    assert "1-unsloth → no candidate run" in summary.read_text() and "no candidate run" in capsys.readouterr().out


def test_sweeps_from_different_gpus_are_not_compared(tmp_path, capsys):
    other = candidate(tmp_path)
    for run in ("0-trl", "1-unsloth"):
        path = other / run / results.SUMMARY
        summary = json.loads(path.read_text())
        summary["hardware"]["gpus"][0]["name"] = "NVIDIA A100-SXM4-80GB"
        results.write_json_atomic(path, summary)
    assert compare.main([str(FIXTURE), str(other)]) == 2
    assert "the baseline ran on NVIDIA H200, the candidate on NVIDIA A100-SXM4-80GB" in capsys.readouterr().err
