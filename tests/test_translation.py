"""Every runner's translation of the job spec: a field that is silently dropped is the bug caught here.

For each runner and each field of the spec, change the field alone and require that the framework's
arguments change too.
"""

import dataclasses
from pathlib import Path

import pytest

from bench.runners import llamafactory, trl, unsloth
from bench.spec import LoraSpec, TrainSpec
from tests.test_spec import make_spec

# Reaches the frameworks by another road, checked in the runners' own tests: precision is resolved first
# (bench.spec.resolve_precision), chat_template has a single allowed value, and the worker itself applies
# vram_budget_gb (torch.cuda.set_per_process_memory_fraction) whatever the framework.
ELSEWHERE = {"precision", "chat_template", "vram_budget_gb", "num_gpus"}  # num_gpus: torchrun, by the launcher
CHANGED = {
    "lr": 1.234e-4, "scheduler": "cosine", "warmup_steps": 7, "batch_size": 3, "grad_accum": 5,
    "max_seq_len": 777, "max_steps": 11, "seed": 1234, "gradient_checkpointing": True,
    "attn_implementation": "eager", "quant": "4bit",
}  # fmt: skip
LORA_CHANGED = {"r": 3, "alpha": 9, "dropout": 0.123, "target_modules": ("q_proj",)}

TRANSLATORS = {
    "trl": lambda spec: {
        "sft": trl.sft_kwargs(spec, precision="fp32", on_gpu=True),
        "lora": trl.lora_kwargs(spec),
        "model": trl.model_kwargs(spec, torch_dtype="float32"),
    },
    "llamafactory": lambda spec: llamafactory.run_args(spec, "/models/tiny", Path("/data"), "fp32", on_gpu=True),
    "unsloth": lambda spec: {
        "load": unsloth.from_pretrained_kwargs(spec, torch_dtype="bfloat16"),
        "peft": unsloth.peft_kwargs(spec),
        "sft": unsloth.sft_kwargs(spec, precision="bf16", on_gpu=True),
    },
}
# Unsloth picks its own attention kernels; the run records that in its notes instead.
NOT_APPLIED = {("unsloth", "attn_implementation")}


def test_the_changes_cover_every_spec_field():
    assert set(CHANGED) | ELSEWHERE | {"lora"} == {f.name for f in dataclasses.fields(TrainSpec)}
    assert set(LORA_CHANGED) == {f.name for f in dataclasses.fields(LoraSpec)}


@pytest.mark.parametrize("runner", sorted(TRANSLATORS))
@pytest.mark.parametrize("field", sorted(CHANGED))
def test_every_train_field_reaches_the_framework(runner, field):
    if (runner, field) in NOT_APPLIED:
        pytest.skip(f"{runner} does not apply {field}; recorded in the run's notes")
    translate = TRANSLATORS[runner]
    assert translate(make_spec(**{field: CHANGED[field]})) != translate(make_spec())


@pytest.mark.parametrize("runner", sorted(TRANSLATORS))
@pytest.mark.parametrize("field", sorted(LORA_CHANGED))
def test_every_lora_field_reaches_the_framework(runner, field):
    translate = TRANSLATORS[runner]
    lora = dataclasses.replace(LoraSpec(), **{field: LORA_CHANGED[field]})
    assert translate(make_spec(lora=lora)) != translate(make_spec())
