"""The job fields published runs set, checked at the edge; a published run replayed on a host that cannot
honour all of it; scenarios that set their framework sweep once each."""

import pytest

from bench.core.errors import SpecError, UserError
from bench.sweep import app as run
from bench.sweep import published
from bench.sweep.app import job_spec
from tests.test_config import typed

PLAIN = "### Question: {instruction}\n ### Answer: {output}"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epochs=3"], "train.epochs=3.0 and train.max_steps=30: exactly one is set; to train for max_steps, add "
                             "train.epochs=null; to train by epochs, train.max_steps=null"),
        (["train.max_steps=null"], "exactly one is set; set train.max_steps=N, or train.epochs=E"),
        (["train.optimizer=sgd"], "train.optimizer='sgd': expected one of adamw_torch, adamw_torch_fused"),
        (["dataset.prompt_format='Q: {instruction}'"], "no {output} field, so no answer to train on"),
        (["dataset.prompt_format='Q: {question} A: {output}'"], "unknown field {question}; a format knows"),
        (["dataset.prompt_format='{output} was the answer'"], "must end with {output}"),
        (["dataset.prompt_format='{output}'"], "nothing before {output}, so no prompt apart from the answer"),
        (["dataset.eos=true"], "dataset.eos=true: the chat template ends the answer itself"),
        (["dataset.prompt_format='Q: {instruction:>99999999} A: {output}'"],
         "{instruction:>99999999} has a format spec; a field is the bare name: {instruction}"),
        (["dataset.prompt_format='Q: {instruction!r} A: {output}'"], "{instruction!r} has a conversion"),
        (["train.epochs=1", "train.max_steps=null", "train.packing=packed"],
         "set train.max_steps=N (and train.epochs=null) instead, or train.packing=none to keep training by epochs"),
        (["train.max_grad_norm=-1"], "train.max_grad_norm=-1.0: must be >= 0"),
        (["train.lr=inf"], "train.lr=inf: must be a finite number"),
        (["train.weight_decay=inf"], "train.weight_decay=inf: must be a finite number"),
        (["train.epochs=nan", "train.max_steps=null"], "train.epochs=nan: must be a finite number > 0"),
        (["train.epochs=inf", "train.max_steps=null"], "train.epochs=inf: must be a finite number > 0"),
        (["train.epochs=1e300", "train.max_steps=null"], "train.epochs=1e+300: 6e+301 steps"),
        (["train.max_steps=10000000"], "train.max_steps=10000000: more than 1,000,000 optimizer steps"),
    ],
)
def test_bad_job_fields_are_one_line_before_any_run(tmp_path, overrides, message):
    with pytest.raises(SpecError) as e:
        job_spec(typed(*overrides, f"cache_dir={tmp_path}"), tmp_path / "run")
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_format_with_only_the_answer_trains_with_the_loss_on_every_token(tmp_path):
    spec = job_spec(typed("dataset.prompt_format='{output}'", "train.loss_on=all", f"cache_dir={tmp_path}"), tmp_path)
    assert spec.dataset.prompt_format == "{output}"


def test_epochs_become_one_step_count_over_the_usable_rows(tmp_path):
    """240 bundled rows, 2 epochs, a global batch of 4 x 3: ceil(2 x 240 / 12) = 40 steps, for every framework."""
    c = typed("train.epochs=2", "train.max_steps=null", "train.batch_size=4", "train.grad_accum=3",
              f"cache_dir={tmp_path}")  # fmt: skip
    spec = job_spec(c, tmp_path)
    assert (spec.train.epochs, spec.train.max_steps) == (2, 40)
    assert run.steps_note(spec, 240) == ["train.epochs=2: 40 steps over 240 rows (global batch 12)"]
    half = job_spec(typed("train.epochs=0.5", "train.max_steps=null", f"cache_dir={tmp_path}"), tmp_path)
    assert half.train.max_steps == 30  # ceil(0.5 x 240 / 4)


def test_an_8bit_optimizer_asked_for_on_a_cpu_is_skipped_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "host_has_gpu", lambda: False)
    c = typed("train.optimizer=adamw_8bit", f"cache_dir={tmp_path}")
    reason = run.host_reason(c.framework, job_spec(c, tmp_path))
    assert reason == "train.optimizer=adamw_8bit: bitsandbytes needs a CUDA GPU; none found on this host"


def test_a_published_run_on_a_cpu_leaves_out_what_it_cannot_do_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "host_has_gpu", lambda: False)
    c = typed("scenario=seed-unsloth", "framework=trl", "model=tiny", f"cache_dir={tmp_path}")
    spec = job_spec(c, tmp_path)
    assert (spec.train.quant, spec.train.optimizer) == ("none", "adamw_torch")  # what really runs, in the job key
    record = published.record(c, gpu=False)
    assert record["source"] == "luochang212/sft-note 3.unsloth.ipynb" and record["as_published"] is False
    left_out = " | ".join(record["left_out"])
    for item in ("train.quant=4bit", "train.optimizer=adamw_8bit", "gradient_checkpointing", "model=tiny"):
        assert item in left_out
    assert run.host_reason(c.framework, spec) is None  # it runs, without them


def test_a_published_run_on_a_gpu_keeps_every_value(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "host_has_gpu", lambda: True)
    c = typed("scenario=seed-trl", "model=qwen2.5-0.5b", "model.path=/models/qwen", f"cache_dir={tmp_path}")
    spec = job_spec(c, tmp_path)
    assert (spec.train.quant, spec.train.precision, spec.train.quant_compute_dtype) == ("4bit", "fp16", "bf16")
    assert spec.dataset.prompt_format == PLAIN and spec.train.max_steps == 240  # 1 epoch of 240 rows at batch 1
    assert published.record(c, gpu=True) == {"source": "luochang212/sft-note 2.trl.ipynb", "as_published": True,
                                       "left_out": []}  # fmt: skip


def test_outside_a_published_scenario_nothing_is_left_out(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "host_has_gpu", lambda: False)
    c = typed("train.quant=4bit", f"cache_dir={tmp_path}")
    assert job_spec(c, tmp_path).train.quant == "4bit" and published.record(c, gpu=False) is None


def test_scenarios_that_set_their_framework_sweep_once_each():
    argv = ["scenario=seed-llamafactory,seed-trl,seed-unsloth", "model=tiny"]
    assert run.pinned_frameworks(argv) == [*argv, "~hydra.sweeper.params.framework"]
    assert run.pinned_frameworks(["scenario=seed-0.5b"]) == ["scenario=seed-0.5b"]
    assert run.pinned_frameworks(["scenario=seed-trl", "framework=llamafactory"])[-1] == "framework=llamafactory"
    with pytest.raises(UserError, match="seed-trl set their framework, the others do not"):
        run.pinned_frameworks(["scenario=seed-trl,seed-0.5b"])
