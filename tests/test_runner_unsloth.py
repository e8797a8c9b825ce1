"""The Unsloth runner: translation of the job spec and deciding "cannot run here" before importing it."""

from bench.worker.runners import unsloth as runner
from tests.conftest import make_spec


def translate(spec):
    return runner.translate(spec, precision="bf16", on_gpu=True)


def test_gradient_checkpointing_is_unsloths_own_not_the_trainers():
    t = translate(make_spec(gradient_checkpointing=True))
    assert t["peft"]["use_gradient_checkpointing"] == "unsloth"
    assert t["sft"]["gradient_checkpointing"] is False


def test_4bit_loads_quantized_base_weights():
    assert translate(make_spec(quant="4bit"))["load"]["load_in_4bit"] is True
    assert translate(make_spec())["load"]["load_in_4bit"] is False


def test_no_gpu_is_unsupported_even_when_installed():
    reason = runner.unsupported_reason(make_spec(), cuda_available=False, find_spec=lambda name: object())
    assert "requires an NVIDIA/AMD/Intel GPU" in reason


def test_missing_packages_are_named():
    reason = runner.unsupported_reason(make_spec(), cuda_available=True, find_spec=lambda name: None)
    assert "unsloth, unsloth_zoo, triton" in reason


def test_gpu_and_packages_present_can_run():
    assert runner.unsupported_reason(make_spec(), cuda_available=True, find_spec=lambda name: object()) is None
