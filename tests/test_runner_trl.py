"""The TRL runner: where the job spec's values land, and what it can run (field coverage: test_translation)."""

import dataclasses

import pytest

from bench.worker.runners import trl as runner
from tests.conftest import make_spec


def test_values_land_on_the_right_arguments():
    spec = make_spec(lr=3e-4, batch_size=3, grad_accum=5, max_seq_len=777, warmup_steps=7)
    sft = runner.sft_kwargs(spec, precision="fp32", on_gpu=False)
    assert sft["learning_rate"] == 3e-4
    assert sft["per_device_train_batch_size"] == 3
    assert sft["gradient_accumulation_steps"] == 5
    assert sft["max_length"] == 777
    assert sft["warmup_steps"] == 7
    assert sft["completion_only_loss"] is True


@pytest.mark.parametrize(
    "precision, bf16, fp16", [("fp32", False, False), ("bf16", True, False), ("fp16", False, True)]
)
def test_precision_sets_trl_flags_explicitly(precision, bf16, fp16):
    sft = runner.sft_kwargs(make_spec(), precision=precision, on_gpu=True)
    assert (sft["bf16"], sft["fp16"]) == (bf16, fp16)


def test_cpu_turns_gradient_checkpointing_off():
    sft = runner.sft_kwargs(make_spec(gradient_checkpointing=True), precision="fp32", on_gpu=False)
    assert sft["gradient_checkpointing"] is False
    assert sft["use_cpu"] is True


def test_trust_remote_code_is_off_unless_the_model_sets_it():
    spec = make_spec()
    assert runner.model_kwargs(spec, "fp32", None)["trust_remote_code"] is False
    trusting = dataclasses.replace(spec, model=dataclasses.replace(spec.model, trust_remote_code=True))
    assert runner.model_kwargs(trusting, "fp32", None)["trust_remote_code"] is True


def test_4bit_needs_bitsandbytes_and_a_gpu():
    spec = make_spec(quant="4bit")
    assert "bitsandbytes is not installed" in runner.unsupported_reason(spec, True, find_spec=lambda name: None)
    assert "needs a CUDA GPU" in runner.unsupported_reason(spec, False, find_spec=lambda name: object())
    assert runner.unsupported_reason(spec, True, find_spec=lambda name: object()) is None
    assert runner.unsupported_reason(make_spec(), False) is None
