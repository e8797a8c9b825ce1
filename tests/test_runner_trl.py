"""The TRL runner's translation of the job spec: no field may be silently dropped."""

import dataclasses

import pytest

from bench.runners import trl as runner
from bench.spec import LoraSpec, TrainSpec
from tests.test_spec import make_spec

# Fields that reach TRL by another road, each checked by its own test below.
ELSEWHERE = {"precision", "chat_template"}

CHANGED = {
    "lr": 1.234e-4,
    "scheduler": "cosine",
    "warmup_steps": 7,
    "batch_size": 3,
    "grad_accum": 5,
    "max_seq_len": 777,
    "max_steps": 11,
    "seed": 1234,
    "gradient_checkpointing": True,
    "attn_implementation": "eager",
    "quant": "4bit",
}
LORA_CHANGED = {"r": 3, "alpha": 9, "dropout": 0.123, "target_modules": ("q_proj",)}


def translate(spec):
    return {
        "sft": runner.sft_kwargs(spec, precision="fp32", on_gpu=True),
        "lora": runner.lora_kwargs(spec),
        "model": runner.model_kwargs(spec, torch_dtype="float32"),
    }


def test_changes_cover_every_spec_field():
    assert set(CHANGED) | ELSEWHERE | {"lora"} == {f.name for f in dataclasses.fields(TrainSpec)}
    assert set(LORA_CHANGED) == {f.name for f in dataclasses.fields(LoraSpec)}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_every_train_field_reaches_trl(field):
    assert translate(make_spec(**{field: CHANGED[field]})) != translate(make_spec())


@pytest.mark.parametrize("field", sorted(LORA_CHANGED))
def test_every_lora_field_reaches_peft(field):
    lora = dataclasses.replace(LoraSpec(), **{field: LORA_CHANGED[field]})
    assert translate(make_spec(lora=lora))["lora"] != translate(make_spec())["lora"]


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
    assert runner.model_kwargs(spec, None)["trust_remote_code"] is False
    trusting = dataclasses.replace(spec, model=dataclasses.replace(spec.model, trust_remote_code=True))
    assert runner.model_kwargs(trusting, None)["trust_remote_code"] is True


def test_4bit_needs_bitsandbytes_and_a_gpu():
    spec = make_spec(quant="4bit")
    assert "bitsandbytes is not installed" in runner.unsupported_reason(spec, True, find_spec=lambda name: None)
    assert "needs a CUDA GPU" in runner.unsupported_reason(spec, False, find_spec=lambda name: object())
    assert runner.unsupported_reason(spec, True, find_spec=lambda name: object()) is None
    assert runner.unsupported_reason(make_spec(), False) is None
