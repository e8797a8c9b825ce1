"""The Axolotl runner: its config keys, its dataset files, what it can run (field coverage: test_translation).

Parent side: the runner module imports Axolotl only inside its functions, so none of this needs Axolotl.
"""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from bench.core.data import Example, to_conversation
from bench.core.models import QWEN25_CHAT_TEMPLATE
from bench.worker.runners import axolotl as runner
from tests.conftest import REPO, make_spec

DATA_DIR = Path("/results/run/axolotl_data")


def cfg(spec, precision="fp32", on_gpu=True):
    return runner.config(spec, "/models/tiny", DATA_DIR, precision, on_gpu)


def test_values_land_on_axolotl_config_keys():
    spec = make_spec(lr=3e-4, batch_size=3, grad_accum=5, max_seq_len=777, warmup_steps=7, scheduler="cosine")
    c = cfg(spec)
    assert (c["learning_rate"], c["micro_batch_size"], c["gradient_accumulation_steps"]) == (3e-4, 3, 5)
    assert (c["sequence_len"], c["warmup_steps"], c["lr_scheduler"]) == (777, 7, "cosine")
    assert c["lora_target_modules"] == list(spec.train.lora.target_modules)
    assert (c["adapter"], c["train_on_inputs"], c["sample_packing"]) == ("lora", False, False)
    assert c["save_strategy"] == "no" and c["base_model"] == "/models/tiny"


def test_the_trainer_defaults_trl_trains_with_are_explicit():
    c = cfg(make_spec())
    assert (c["optimizer"], c["weight_decay"], c["max_grad_norm"]) == ("adamw_torch_fused", 0.0, 1.0)
    assert c["pad_to_multiple_of"] == 8 and c["shuffle_merged_datasets"] is False
    assert c["excess_length_strategy"] == "truncate"


def test_precision_and_checkpointing_are_explicit():
    c = cfg(make_spec(gradient_checkpointing=True), precision="bf16")
    assert (c["bf16"], c["fp16"], c["tf32"], c["gradient_checkpointing"]) == (True, False, False, True)
    assert cfg(make_spec(gradient_checkpointing=True), on_gpu=False)["gradient_checkpointing"] is False


def test_4bit_is_qlora():
    c = cfg(make_spec(quant="4bit"))
    assert (c["adapter"], c["load_in_4bit"]) == ("qlora", True)


def test_rows_are_rendered_with_the_harness_template_and_system_prompt():
    (entry,) = cfg(make_spec())["datasets"]
    assert entry["type"] == "chat_template" and entry["chat_template"] == "jinja"
    assert Path(entry["chat_template_jinja"]).read_text(encoding="utf-8") == QWEN25_CHAT_TEMPLATE
    assert entry["roles_to_train"] == ["assistant"]


def test_messages_file_holds_system_user_and_answer(tmp_path):
    conversations = [to_conversation(Example("问", "病例", "答"), "SYS")]
    runner.write_messages(conversations, tmp_path / "d" / "train.jsonl")
    (line,) = (tmp_path / "d" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["messages"] == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "问\n病例"},
        {"role": "assistant", "content": "答"},
    ]


def test_strict_mode_hands_over_the_harness_ids_with_answer_labels(tmp_path):
    spec = make_spec()
    strict = dataclasses.replace(spec, dataset=dataclasses.replace(spec.dataset, tokenize="harness"))
    assert cfg(strict)["datasets"][0]["path"].endswith("tokenized.jsonl")
    runner.write_tokenized([{"input_ids": [5, 6, 7], "completion_mask": [0, 1, 1]}], "answer", tmp_path / "t.jsonl")
    row = json.loads((tmp_path / "t.jsonl").read_text())
    assert row == {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]}


def test_callbacks_go_through_axolotls_plugin_hook():
    assert cfg(make_spec())["plugins"] == ["bench.worker.runners.axolotl.HarnessPlugin"]


def test_what_axolotl_cannot_run_is_unsupported_with_reason():
    assert "attn_implementation" in runner.unsupported_reason(make_spec(attn_implementation="flex_attention"))
    assert "warmup_steps=1" in runner.unsupported_reason(make_spec(warmup_steps=1))
    assert "needs a CUDA GPU" in runner.unsupported_reason(make_spec(quant="4bit"), False, lambda name: object())
    assert runner.unsupported_reason(make_spec()) is None


def test_the_runner_imports_without_axolotl():
    code = "import sys, bench.worker.runners.axolotl; print(any(m.split('.')[0] == 'axolotl' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
