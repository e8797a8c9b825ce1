"""The LLaMA-Factory runner: argument names, its dataset format, what it can run (field coverage: test_translation)."""

import json
from pathlib import Path

from bench.core.data import Example
from bench.worker.runners import llamafactory as runner
from tests.conftest import make_spec

DATA_DIR = Path("/results/run/llamafactory_data")


def args(spec, precision="fp32", on_gpu=True):
    return runner.run_args(spec, "/models/tiny", DATA_DIR, precision, on_gpu)


def test_values_land_on_llamafactory_argument_names():
    spec = make_spec(lr=3e-4, batch_size=3, grad_accum=5, max_seq_len=777, warmup_steps=7, scheduler="cosine")
    a = args(spec)
    assert (a["learning_rate"], a["per_device_train_batch_size"], a["gradient_accumulation_steps"]) == (3e-4, 3, 5)
    assert (a["cutoff_len"], a["warmup_steps"], a["lr_scheduler_type"]) == (777, 7, "cosine")
    assert a["lora_target"] == ",".join(spec.train.lora.target_modules)
    assert (a["stage"], a["finetuning_type"], a["template"], a["train_on_prompt"]) == ("sft", "lora", "qwen", False)
    assert a["save_strategy"] == "no" and a["report_to"] == "none"


def test_precision_and_checkpointing_are_explicit():
    a = args(make_spec(gradient_checkpointing=False), precision="bf16")
    assert (a["bf16"], a["fp16"], a["disable_gradient_checkpointing"]) == (True, False, True)
    on_cpu = args(make_spec(gradient_checkpointing=True), on_gpu=False)
    assert on_cpu["disable_gradient_checkpointing"] is True and on_cpu["use_cpu"] is True
    assert args(make_spec(gradient_checkpointing=True))["disable_gradient_checkpointing"] is False


def test_4bit_uses_bitsandbytes_quantization():
    assert args(make_spec(quant="4bit"))["quantization_bit"] == 4
    assert args(make_spec())["quantization_bit"] is None


def test_dataset_is_written_in_its_own_format_with_the_system_prompt(tmp_path):
    examples = [Example("问", "", "答"), Example("问2", "病例", "答2")]
    runner.write_dataset(runner.alpaca_rows(examples, "SYS", None, ""), tmp_path / "d")
    info = json.loads((tmp_path / "d" / "dataset_info.json").read_text())
    entry = info[runner.DATASET]
    assert entry["formatting"] == "alpaca" and entry["columns"]["system"] == "system"
    rows = json.loads((tmp_path / "d" / entry["file_name"]).read_text())
    assert rows[1] == {"instruction": "问2", "input": "病例", "output": "答2", "system": "SYS"}


def test_unknown_attention_is_unsupported():
    assert "attn_implementation" in runner.unsupported_reason(make_spec(attn_implementation="flex_attention"))
    assert runner.unsupported_reason(make_spec()) is None
    assert "needs a CUDA GPU" in runner.unsupported_reason(make_spec(quant="4bit"), False, lambda name: object())
