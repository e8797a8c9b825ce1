"""The job fields published runs set, run for real: a plain prompt format gives TRL, LLaMA-Factory and Axolotl
one fingerprint and one loss curve; with the loss on every token, LLaMA-Factory's loss differs from TRL's by
exactly its denominator; train.epochs stops where the equivalent max_steps does."""

import json

import pytest

from bench.analysis.assess import parity
from bench.core import results
from bench.core.record import load_sweep
from tests.conftest import bench_run, run_dirs

pytestmark = pytest.mark.integration

# The Unsloth notebook's format with its EOS after the answer, as one job for three frameworks.
PLAIN = "### Question:\n{instruction}\n\n### Response:\n{output}"


def summaries(tmp_path) -> dict[str, dict]:
    return {s["framework"]: s for s in (json.loads((r / results.SUMMARY).read_text()) for r in run_dirs(tmp_path))}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plain")
    proc = bench_run(tmp, "framework=trl,llamafactory,axolotl", f"dataset.prompt_format='{PLAIN}'", "dataset.eos=true",
                     "train.max_steps=6", "eval.prompts=2")  # fmt: skip
    return tmp, proc


def test_a_plain_format_trains_in_every_framework(plain):
    tmp, proc = plain
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = summaries(tmp)
    assert {f: s["status"] for f, s in runs.items()} == dict.fromkeys(("trl", "llamafactory", "axolotl"), "ok"), runs
    spec = json.loads((run_dirs(tmp)[0] / results.SPEC).read_text())
    assert spec["dataset"]["prompt_format"] == PLAIN and spec["dataset"]["eos"] is True


def test_a_plain_format_is_one_job_with_one_fingerprint_and_curve(plain):
    sweep = next(p for p in plain[0].iterdir() if p.is_dir())
    runs, _ = load_sweep(sweep)
    assert len({r.summary.job_key for r in runs}) == 1
    assert len({repr(r.summary.fingerprint) for r in runs}) == 1, [r.summary.fingerprint for r in runs]
    for check in parity(runs)[1:]:
        assert check["same_tokens"] and check["same_curve"] and check["curve_steps"], check


def test_loss_on_all_is_the_same_tokens_and_llamafactory_divides_by_one_more_token_per_row(tmp_path):
    """With every token labelled, each row's first token carries a label that no position predicts. TRL's
    Trainer (transformers 5.24) leaves it out of the loss's denominator, LLaMA-Factory 0.9.5's (its pinned
    transformers 5.6) counts it: the same tokens, the same summed loss, divided by one more token per row."""
    proc = bench_run(tmp_path, "framework=trl,llamafactory", f"dataset.prompt_format='{PLAIN}'", "dataset.eos=true",
                     "train.loss_on=all", "train.max_steps=3", "eval.enabled=false")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = summaries(tmp_path)
    assert runs["trl"]["fingerprint"] == runs["llamafactory"]["fingerprint"]
    trl, lf = (results.read_jsonl(run / results.EVENTS)[0] for run in sorted(run_dirs(tmp_path)))
    rows = 4  # train.batch_size: the sequences of step 1
    assert trl["trainable_tokens"] > 0.9 * trl["tokens"]  # the prompt counts too, not only the answer
    predicted = trl["trainable_tokens"]
    assert lf["loss"] == pytest.approx(trl["loss"] * predicted / (predicted + rows), rel=1e-5)
    assert any("denominator" in n for n in runs["llamafactory"]["notes"])


def test_the_held_out_answers_are_asked_in_the_plain_format(plain):
    generations = results.read_jsonl(run_dirs(plain[0])[0] / results.GENERATIONS)
    assert len(generations) == 2 and all("prediction" in g for g in generations)


def test_epochs_stop_where_the_equivalent_max_steps_do(tmp_path):
    """24 rows, batch 4: one epoch is 6 steps. The two runs are different job keys (epochs is a field of the
    job) but the same training: the same tokens and the same loss at every step."""
    by_epochs = bench_run(tmp_path / "epochs", "framework=trl", "train.epochs=1", "train.max_steps=null",
                          "dataset.max_rows=24", "eval.enabled=false")  # fmt: skip
    by_steps = bench_run(tmp_path / "steps", "framework=trl", "train.max_steps=6", "dataset.max_rows=24",
                         "eval.enabled=false")  # fmt: skip
    assert by_epochs.returncode == 0 and by_steps.returncode == 0, by_epochs.stderr[-2000:] + by_steps.stderr[-2000:]
    (a,), (b,) = run_dirs(tmp_path / "epochs"), run_dirs(tmp_path / "steps")
    sa, sb = (json.loads((r / results.SUMMARY).read_text()) for r in (a, b))
    assert sa["status"] == sb["status"] == "ok"
    assert sa["effective"]["max_steps"] == sb["effective"]["max_steps"] == 6
    assert "train.epochs=1: 6 steps over 24 rows (global batch 4)" in sa["notes"]
    assert sa["fingerprint"] == sb["fingerprint"]
    losses = [[e["loss"] for e in results.read_jsonl(r / results.EVENTS)] for r in (a, b)]
    assert len(losses[0]) == 6 and losses[0] == pytest.approx(losses[1], rel=1e-6)
