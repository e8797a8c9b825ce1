"""Axolotl and TRL run the same job: same tokens in, same loss at step 1 and after; what Axolotl cannot run is
recorded as skipped with the reason."""

import json

import pytest

from bench import results
from tests.conftest import bench_run, run_dirs

pytestmark = pytest.mark.integration


def summaries(tmp_path):
    return {s["framework"]: s for s in (json.loads((r / results.SUMMARY).read_text()) for r in run_dirs(tmp_path))}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pair")
    proc = bench_run(tmp, "framework=trl,axolotl", "train.max_steps=8", "eval.enabled=false")
    return tmp, proc


def test_both_frameworks_finish(pair):
    tmp, proc = pair
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = summaries(tmp)
    assert {f: s["status"] for f, s in runs.items()} == {"trl": "ok", "axolotl": "ok"}, runs
    assert runs["axolotl"]["versions"]["axolotl"]


def test_fingerprints_are_equal(pair):
    runs = summaries(pair[0])
    trl, axolotl = runs["trl"]["fingerprint"], runs["axolotl"]["fingerprint"]
    assert trl["batches_hashed"] == axolotl["batches_hashed"] > 0
    assert trl == axolotl


def test_step1_losses_agree(pair):
    runs = summaries(pair[0])
    a, b = runs["trl"]["metrics"]["first_loss"], runs["axolotl"]["metrics"]["first_loss"]
    assert abs(a - b) / abs(a) < 1e-5


def test_both_ran_one_job_and_their_loss_curves_agree(pair):
    """The curve after the first real update agrees too: both seed the LoRA initialisation the same way."""
    from bench.summary import load_summaries, loss_curves, parity

    sweep = next(p for p in pair[0].iterdir() if p.is_dir())
    runs = load_summaries(sweep)
    assert runs[0]["job_key"] == runs[1]["job_key"] and runs[0]["framework"] != runs[1]["framework"]
    check = parity(runs, loss_curves(sweep, runs))[1]
    assert check["same_curve"] and check["curve_steps"], check


def test_every_step_saw_the_same_tokens(pair):
    events = {r.name.split("-", 1)[1]: results.read_jsonl(r / results.EVENTS) for r in run_dirs(pair[0])}
    key = [(e["tokens"], e["trainable_tokens"]) for e in events["trl"]]
    assert key == [(e["tokens"], e["trainable_tokens"]) for e in events["axolotl"]]
    assert len(key) == 8


def test_truncation_keeps_answerless_rows_and_strict_mode_removes_the_difference(tmp_path):
    """At a max length that cuts answers, Axolotl cuts the end as TRL does but keeps the rows left without an
    answer token (TRL drops them); tokenized once by the harness, both train on the same ids."""
    proc = bench_run(
        tmp_path, "framework=trl,axolotl", "dataset.tokenize=framework,harness", "train.max_seq_len=64",
        "train.max_steps=3", "eval.enabled=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((r / results.SUMMARY).read_text()) for r in run_dirs(tmp_path)]
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
