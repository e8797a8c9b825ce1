"""LLaMA-Factory beside TRL: a failure inside it is recorded, and where the two truncate differently by design.
That they run the same job (same tokens, same losses) is tests/integration/test_parity.py."""

import json

import pytest

from bench.core import results
from tests.conftest import bench_run, run_dirs

pytestmark = pytest.mark.integration


def summaries(tmp_path):
    return {s["framework"]: s for s in (json.loads((r / results.SUMMARY).read_text()) for r in run_dirs(tmp_path))}


def test_failure_inside_llamafactory_is_recorded_and_the_sweep_goes_on(tmp_path):
    # An invalid value for LLaMA-Factory's own logging switch makes its code raise; TRL ignores it.
    proc = bench_run(
        tmp_path, "framework=llamafactory,trl", "++framework.env.LLAMAFACTORY_VERBOSITY=BOGUS", "train.max_steps=3",
        "eval.enabled=false",
    )
    assert proc.returncode == 3, proc.stderr[-3000:]  # a run failed: the sweep went on and its exit says so
    runs = summaries(tmp_path)
    assert runs["llamafactory"]["status"] == "failed"
    assert "Unknown logging level: BOGUS" in runs["llamafactory"]["reason"]
    assert "llamafactory" in runs["llamafactory"]["log_tail"]  # the tail of its stderr, traceback included
    assert runs["trl"]["status"] == "ok"


def test_truncation_differs_by_design_and_strict_mode_removes_the_difference(truncated):
    """At a max length that cuts answers, TRL and LLaMA-Factory truncate differently (the fingerprint shows
    it); tokenized once by the harness, both train on the same ids."""
    tmp_path, proc = truncated  # the sweep has Axolotl's runs too (tests/integration/conftest.py)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((r / results.SUMMARY).read_text()) for r in run_dirs(tmp_path)]
    by = {(s["framework"], s["effective"]["tokenize"]): s for s in runs}
    assert all(s["status"] == "ok" for s in runs), [s.get("reason") for s in runs]
    fp = {k: s["fingerprint"]["first_batches_sha256"] for k, s in by.items()}
    assert fp[("trl", "framework")] != fp[("llamafactory", "framework")]
    assert fp[("trl", "harness")] == fp[("llamafactory", "harness")]
    assert "≠ tokens" in proc.stdout and "strict" in proc.stdout
    # The summary counts what each framework trained on: TRL drops rows its truncation left without an
    # answer token, LLaMA-Factory keeps every row (it shortens the prompt).
    trl, lf = by[("trl", "framework")], by[("llamafactory", "framework")]
    assert trl["effective"]["train_examples"] == trl["fingerprint"]["examples"] < trl["data"]["kept"]
    assert trl["data"]["dropped_rows"] == trl["data"]["kept"] - trl["effective"]["train_examples"] > 0
    assert lf["data"]["dropped_rows"] == 0 and lf["effective"]["train_examples"] == lf["data"]["kept"]
    strict = by[("trl", "harness")]
    assert strict["data"]["dropped_rows"] == strict["data"]["kept"] - strict["effective"]["train_examples"] > 0
    # Held-out loss is taken over rows that still have answer tokens, and says how many those were.
    q = trl["quality"]
    assert q["heldout_examples"] + q["heldout_rows_without_answer"] == trl["data"]["heldout"]["kept"]
    assert q["heldout_rows_without_answer"] > 0
    # No ratio between runs that trained on other tokens.
    sweep = next(p for p in tmp_path.iterdir() if p.is_dir())
    md = (sweep / "report.md").read_text()
    assert "no ratio — trained on different tokens" in md.split("\n## ", 2)[1]  # the findings, first
    assert "not comparable: other tokens than" in (sweep / "runs.csv").read_text()
