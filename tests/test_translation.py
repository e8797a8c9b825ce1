"""Every registered runner's translation of the job spec: a field that is silently dropped is the bug caught here.

The runners are the ones conf/framework/*.yaml registers; for each, and each field of the spec, change the
field alone and require that the framework's arguments change too, unless the runner declares the field
NOT_APPLIED (the run then records it in its notes).
"""

import dataclasses

import pytest

from bench.core import config
from bench.core.spec import LoraSpec, TrainSpec
from bench.worker import runners
from tests.conftest import make_spec

# Reaches the frameworks by another road, checked in the runners' own tests: precision is resolved first
# (bench.core.spec.resolve_precision), chat_template has a single allowed value, the worker itself applies
# vram_budget_gb (torch.cuda.set_per_process_memory_fraction), the launcher num_gpus (torchrun), and the
# harness turns epochs into max_steps (bench.sweep.app.train_steps) before any runner sees the spec.
ELSEWHERE = {"precision", "chat_template", "vram_budget_gb", "num_gpus", "epochs"}
CHANGED = {
    "lr": 1.234e-4, "scheduler": "cosine", "warmup_steps": 7, "batch_size": 3, "grad_accum": 5,
    "max_seq_len": 777, "max_steps": 11, "seed": 1234, "gradient_checkpointing": True,
    "attn_implementation": "eager", "quant": "4bit", "packing": "packed", "kernels": "liger",
    "optimizer": "adamw_8bit", "weight_decay": 0.05, "max_grad_norm": 0.3, "loss_on": "all",
    "quant_double": False, "quant_compute_dtype": "fp16",
}  # fmt: skip
# Fields that matter only beside another: compared with and without the change, in that context.
CONTEXT = {"quant_double": {"quant": "4bit"}, "quant_compute_dtype": {"quant": "4bit"}}
DATASET_CHANGED = {"prompt_format": "### Question: {instruction}\n### Answer: {output}"}
LORA_CHANGED = {"r": 3, "alpha": 9, "dropout": 0.123, "target_modules": ("q_proj",)}
REGISTERED = {name: facts["runner"] for name, facts in config.frameworks().items()}


def translate(name, spec):
    return runners.load(REGISTERED[name]).translate(spec, precision="bf16", on_gpu=True)


def test_every_framework_in_conf_is_registered_with_a_runner():
    assert set(REGISTERED) == {p.stem for p in (config.conf_dir() / "framework").glob("*.yaml")} != set()
    assert all(runners.load(module) for module in REGISTERED.values())  # each fulfils the Runner contract


def test_the_changes_cover_every_spec_field():
    assert set(CHANGED) | ELSEWHERE | {"lora"} == {f.name for f in dataclasses.fields(TrainSpec)}
    assert set(CONTEXT) <= set(CHANGED)
    assert set(LORA_CHANGED) == {f.name for f in dataclasses.fields(LoraSpec)}


@pytest.mark.parametrize("runner", sorted(REGISTERED))
@pytest.mark.parametrize("field", sorted(CHANGED))
def test_every_train_field_reaches_the_framework(runner, field):
    """Changed alone (in its context), a field changes the framework's arguments, or the runner refuses the
    value with a reason naming it (a skipped run), or declares it NOT_APPLIED (a note on every run)."""
    module = runners.load(REGISTERED[runner])
    if field in module.NOT_APPLIED:
        pytest.skip(f"{runner} does not apply {field}; recorded in the run's notes")
    context = CONTEXT.get(field, {})
    changed = make_spec(**context, **{field: CHANGED[field]})
    reason = module.unsupported_reason(changed, cuda_available=True, find_spec=lambda name: object())
    if reason:
        assert f"train.{field}=" in reason
    else:
        assert translate(runner, changed) != translate(runner, make_spec(**context))


@pytest.mark.parametrize("runner", sorted(REGISTERED))
@pytest.mark.parametrize("field", sorted(DATASET_CHANGED))
def test_every_dataset_field_that_shapes_the_rows_reaches_the_framework(runner, field):
    changed = make_spec(dataset={field: DATASET_CHANGED[field]})
    assert translate(runner, changed) != translate(runner, make_spec())


@pytest.mark.parametrize("runner", sorted(REGISTERED))
@pytest.mark.parametrize("field", sorted(LORA_CHANGED))
def test_every_lora_field_reaches_the_framework(runner, field):
    lora = dataclasses.replace(make_spec().train.lora, **{field: LORA_CHANGED[field]})
    assert translate(runner, make_spec(lora=lora)) != translate(runner, make_spec())


@pytest.mark.parametrize("runner", sorted(REGISTERED))
def test_what_a_runner_does_not_apply_names_real_fields(runner):
    assert runners.load(REGISTERED[runner]).NOT_APPLIED <= set(CHANGED)


@pytest.mark.parametrize("runner", sorted(REGISTERED))
@pytest.mark.parametrize("field, modes", [("packing", ("padding_free", "packed")), ("kernels", ("liger", "unsloth"))])
def test_every_mode_is_translated_or_refused_with_its_reason(runner, field, modes):
    """A packing or kernel mode a framework cannot honour is a skipped run with the reason, never a silent
    fallback to another mode (it would make "the same job" a different one)."""
    module = runners.load(REGISTERED[runner])
    for mode in modes:
        spec = make_spec(**{field: mode})
        reason = module.unsupported_reason(spec, cuda_available=True, find_spec=lambda name: object())
        if field in module.NOT_APPLIED:
            continue
        assert reason or translate(runner, spec) != translate(runner, make_spec()), (runner, mode)
        if reason:
            assert f"train.{field}={mode}" in reason
