"""LLaMA-Factory and TRL run the same job: same tokens in, same loss at step 1."""

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
    proc = bench_run(tmp, "framework=trl,llamafactory", "train.max_steps=8")
    return tmp, proc


def test_both_frameworks_finish(pair):
    tmp, proc = pair
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = summaries(tmp)
    assert {f: s["status"] for f, s in runs.items()} == {"trl": "ok", "llamafactory": "ok"}, runs


def test_fingerprints_are_equal(pair):
    runs = summaries(pair[0])
    trl, lf = runs["trl"]["fingerprint"], runs["llamafactory"]["fingerprint"]
    assert trl["batches_hashed"] == lf["batches_hashed"] > 0
    assert trl == lf


def test_step1_losses_agree(pair):
    runs = summaries(pair[0])
    a, b = runs["trl"]["metrics"]["first_loss"], runs["llamafactory"]["metrics"]["first_loss"]
    assert abs(a - b) / abs(a) < 1e-5


def test_both_ran_one_job_and_their_loss_curves_agree(pair):
    from bench.summary import load_summaries, loss_curves, parity

    sweep = next(p for p in pair[0].iterdir() if p.is_dir())
    runs = load_summaries(sweep)
    assert runs[0]["job_key"] == runs[1]["job_key"] and runs[0]["framework"] != runs[1]["framework"]
    check = parity(runs, loss_curves(sweep, runs))[1]
    assert check["same_curve"] and check["curve_steps"], check


def test_every_step_saw_the_same_tokens(pair):
    events = {r.name.split("-", 1)[1]: results.read_jsonl(r / results.EVENTS) for r in run_dirs(pair[0])}
    key = [(e["tokens"], e["trainable_tokens"]) for e in events["trl"]]
    assert key == [(e["tokens"], e["trainable_tokens"]) for e in events["llamafactory"]]
    assert len(key) == 8


def test_the_table_marks_the_pair_as_the_same_job(pair):
    assert " ref" in pair[1].stdout and " =" in pair[1].stdout and "≠" not in pair[1].stdout


def test_failure_inside_llamafactory_is_recorded_and_the_sweep_goes_on(tmp_path):
    # An invalid value for LLaMA-Factory's own logging switch makes its code raise; TRL ignores it.
    proc = bench_run(
        tmp_path, "framework=llamafactory,trl", "++framework.env.LLAMAFACTORY_VERBOSITY=BOGUS", "train.max_steps=3"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = summaries(tmp_path)
    assert runs["llamafactory"]["status"] == "failed"
    assert "Unknown logging level: BOGUS" in runs["llamafactory"]["reason"]
    assert "llamafactory" in runs["llamafactory"]["log_tail"]  # the tail of its stderr, traceback included
    assert runs["trl"]["status"] == "ok"


def test_truncation_differs_by_design_and_strict_mode_removes_the_difference(tmp_path):
    """At a max length that cuts answers, TRL and LLaMA-Factory truncate differently (the fingerprint shows
    it); tokenized once by the harness, both train on the same ids."""
    proc = bench_run(
        tmp_path,
        "framework=trl,llamafactory",
        "dataset.tokenize=framework,harness",
        "train.max_seq_len=64",
        "train.max_steps=3",
    )
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
