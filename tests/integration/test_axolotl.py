"""Axolotl beside TRL: how it truncates, and what it cannot run is recorded as skipped with the reason. That the
two run the same job (same tokens, same losses) is tests/integration/test_parity.py."""

import json

import pytest

from bench.core import results
from tests.conftest import bench_run, run_dirs

pytestmark = pytest.mark.integration


def summaries(tmp_path):
    return {s["framework"]: s for s in (json.loads((r / results.SUMMARY).read_text()) for r in run_dirs(tmp_path))}


def test_truncation_keeps_answerless_rows_and_strict_mode_removes_the_difference(truncated):
    """At a max length that cuts answers, Axolotl cuts the end as TRL does but keeps the rows left without an
    answer token (TRL drops them); tokenized once by the harness, both train on the same ids."""
    tmp, proc = truncated  # tests/integration/conftest.py
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((r / results.SUMMARY).read_text()) for r in run_dirs(tmp)]
    by = {(s["framework"], s["effective"]["tokenize"]): s for s in runs}
    assert all(s["status"] == "ok" for s in runs), [s.get("reason") for s in runs]
    trl, axolotl = by[("trl", "framework")], by[("axolotl", "framework")]
    assert trl["fingerprint"]["dataset_trainable_tokens"] == axolotl["fingerprint"]["dataset_trainable_tokens"]
    assert trl["fingerprint"]["examples"] < axolotl["fingerprint"]["examples"] == axolotl["data"]["kept"]
    assert axolotl["data"]["dropped_rows"] == 0
    assert by[("trl", "harness")]["fingerprint"] == by[("axolotl", "harness")]["fingerprint"]


def test_a_job_axolotl_cannot_run_is_skipped_with_reason_and_the_sweep_goes_on(tmp_path):
    overrides = ("train.warmup_steps=1", "train.max_steps=3", "eval.enabled=false")
    proc = bench_run(tmp_path, "framework=axolotl,trl", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = summaries(tmp_path)
    assert runs["axolotl"]["status"] == "skipped"
    assert "train.warmup_steps=1" in runs["axolotl"]["reason"]
    assert runs["trl"]["status"] == "ok"
    assert "skipped" in proc.stdout
