"""train.packing through TRL and LLaMA-Factory, the layout the model really got, and time to quality."""

import json

import pytest

from bench.core import results
from tests.conftest import bench_run, run_dirs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def packing_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packing")
    proc = bench_run(
        tmp, "framework=trl,llamafactory", "train.packing=none,padding_free,packed", "train.max_steps=6",
        "eval.prompts=1", "eval.every_steps=3", "eval.target_loss=100",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {}
    for d in run_dirs(tmp):
        s = json.loads((d / results.SUMMARY).read_text())
        runs[(s["framework"], json.loads((d / results.SPEC).read_text())["train"]["packing"])] = (d, s)
    return runs


def test_padding_free_feeds_the_same_sequences_with_attention_kept_apart(packing_sweep):
    (_, padded), (_, free) = packing_sweep[("trl", "none")], packing_sweep[("trl", "padding_free")]
    assert padded["status"] == free["status"] == "ok", (padded["reason"], free["reason"])
    # The same sequences in the same batches: one fingerprint. The same step-1 loss: a sequence never
    # attended to its neighbours in the flattened row (a leak would change every loss after the first row).
    assert padded["fingerprint"]["first_batches_sha256"] == free["fingerprint"]["first_batches_sha256"]
    assert free["metrics"]["first_loss"] == pytest.approx(padded["metrics"]["first_loss"], rel=1e-5)
    assert padded["job_key"] != free["job_key"]  # the layout is part of the job
    assert padded["metrics"]["sequences_per_row"] == 1.0 and free["metrics"]["sequences_per_row"] == 4.0
    assert padded["metrics"]["padding_ratio"] > 0.1 > free["metrics"]["padding_ratio"]


def test_packed_rows_hold_several_sequences_in_both_frameworks(packing_sweep):
    for framework in ("trl", "llamafactory"):
        _, s = packing_sweep[(framework, "packed")]
        _, padded = packing_sweep[(framework, "none")]
        assert s["status"] == "ok", s["reason"]
        m = s["metrics"]
        # Measured here: TRL's best-fit packing 16.7 sequences per (flattened) row and 0.2 % padding,
        # LLaMA-Factory's neat packing 4.2 per row and 5.7 %; padded, both 20 %.
        assert m["sequences_per_row"] > 2 and m["padding_ratio"] < padded["metrics"]["padding_ratio"] / 2, m
        assert s["fingerprint"]["packing"] == "packed"


def test_a_mode_a_framework_cannot_honour_is_skipped_with_its_reason(packing_sweep):
    _, s = packing_sweep[("llamafactory", "padding_free")]
    assert s["status"] == "skipped" and "train.packing=padding_free" in s["reason"]
    _, padded = packing_sweep[("llamafactory", "none")]
    assert padded["status"] == "ok" and padded["metrics"]["sequences_per_row"] == 1.0


def test_held_out_loss_during_training_gives_time_and_steps_to_target(packing_sweep):
    run_dir, s = packing_sweep[("trl", "none")]
    evaluated = [e for e in results.read_jsonl(run_dir / results.EVENTS) if e["heldout_loss"] is not None]
    assert [e["step"] for e in evaluated] == [3, 6]
    assert evaluated[-1]["heldout_loss"] == pytest.approx(s["quality"]["heldout_loss"], rel=1e-6)  # same evaluator
    m = s["metrics"]
    assert m["steps_to_target"] == 3 and m["time_to_target_s"] == evaluated[0]["elapsed_s"] > 0
    assert m["train_eval_s"] == pytest.approx(sum(e["eval_s"] for e in evaluated))
