"""The TRL job of a harness run, trained directly: no worker protocol, no callback, no sampler.

Run with the TRL environment's interpreter: `python benchmarks/direct_trl.py RUN_DIR/spec.json`.
Prints the training span as JSON: from the Trainer's on_train_begin to on_train_end, the span the
harness's own `train_s` covers.
"""

import json
import sys
import time

import datasets
import peft
import torch
import trl
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from bench.data import load_examples, to_conversation
from bench.runners import trl as runner
from bench.spec import JobSpec


class Span(TrainerCallback):
    def on_train_begin(self, *args, **kwargs):
        self.begin = time.perf_counter()

    def on_train_end(self, *args, **kwargs):
        self.end = time.perf_counter()


spec = JobSpec.load(sys.argv[1])
path = spec.model.path
rows = [to_conversation(ex, spec.data.system_prompt) for ex in load_examples(spec.data.train_files, spec.data.max_rows)]
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, **runner.model_kwargs(spec, torch.float32))
args = runner.sft_kwargs(spec, "fp32", on_gpu=False) | {"output_dir": "/tmp/sftbench-direct"}
trainer = trl.SFTTrainer(
    model=model,
    args=trl.SFTConfig(**args),
    train_dataset=datasets.Dataset.from_list(rows),
    processing_class=tokenizer,
    peft_config=peft.LoraConfig(**runner.lora_kwargs(spec)),
    callbacks=[span := Span()],
)
trainer.train()
print(json.dumps({"train_s": span.end - span.begin}))
