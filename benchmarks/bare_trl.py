"""A harness run's TRL job as a plain TRL script: no harness code imported, no worker, no sampler.

    python benchmarks/bare_trl.py RUN_DIR/spec.json        (with the TRL environment's interpreter)

Reads the job's values from the run's spec.json and builds model, dataset and SFTConfig with transformers,
peft, trl and datasets alone, as a user would write it; the SFTConfig carries the same settings the harness's
TRL runner passes, so both train the same tokens the same way. A minimal callback times each optimizer step
by the harness's clock (one step end to the next, GPU work finished, logging left out). Prints one JSON
line: step times, losses, the training span and the device.
"""

import json
import sys
import time
from pathlib import Path

import datasets
import peft
import torch
import trl
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback

CHAT_TEMPLATE = Path(__file__).resolve().parent.parent / "bench" / "assets" / "qwen2.5_chat_template.jinja"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class StepClock(TrainerCallback):
    def __init__(self):
        self.sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        self.step_times_s, self.losses, self.mark, self.begin, self.end = [], [], 0.0, 0.0, 0.0

    def on_train_begin(self, *args, **kwargs):
        self.begin = self.mark = time.perf_counter()

    def on_step_end(self, *args, **kwargs):
        self.sync()
        now = time.perf_counter()
        self.step_times_s.append(now - self.mark)
        self.mark = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
        self.mark = time.perf_counter()

    def on_train_end(self, *args, **kwargs):
        self.end = time.perf_counter()


def conversations(data: dict) -> list[dict]:
    """The job's rows (the harness's selection: the rows every framework trains on, in order) as
    prompt/completion conversations."""
    rows = [(r["instruction"], r["input"], r["output"])
            for r in datasets.load_dataset("json", data_files=[data["train_file"]], split="train")]  # fmt: skip
    system = {"role": "system", "content": data["system_prompt"]}
    return [
        {
            "prompt": [system, {"role": "user", "content": f"{q}\n{i}" if i else q}],
            "completion": [{"role": "assistant", "content": a}],
        }
        for q, i, a in rows
    ]


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    model_spec, data, t = spec["model"], spec["dataset"], spec["train"]
    if data["tokenize"] != "framework" or t["num_gpus"] != 1 or data["prompt_format"] != "chat":
        sys.exit("bare_trl.py: only TRL's own tokenization of the chat format on one device "
                 "(dataset.tokenize=framework, dataset.prompt_format=chat, num_gpus=1)")
    on_gpu = torch.cuda.is_available()
    precision = "fp32" if not on_gpu else t["precision"]
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if on_gpu and t["vram_budget_gb"]:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, t["vram_budget_gb"] * 2**30 / total))

    tokenizer = AutoTokenizer.from_pretrained(model_spec["path"], trust_remote_code=model_spec["trust_remote_code"])
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE.read_text()
    quant = None
    if t["quant"] == "4bit":
        compute = precision if t["quant_compute_dtype"] == "auto" else t["quant_compute_dtype"]
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_use_double_quant=t["quant_double"],
                                   bnb_4bit_compute_dtype=DTYPES[compute])  # fmt: skip
    elif t["quant"] == "8bit":
        quant = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(
        model_spec["path"],
        dtype=DTYPES[precision],
        attn_implementation=t["attn_implementation"],
        trust_remote_code=model_spec["trust_remote_code"],
        quantization_config=quant,
    )
    lora, packing = t["lora"], t.get("packing", "none")
    args = trl.SFTConfig(
        output_dir=str(Path(spec["run_dir"]) / "bare"),
        max_steps=t["max_steps"],
        per_device_train_batch_size=t["batch_size"],
        gradient_accumulation_steps=t["grad_accum"],
        learning_rate=t["lr"],
        lr_scheduler_type=t["scheduler"],
        warmup_steps=t["warmup_steps"],
        optim=t["optimizer"],
        weight_decay=t["weight_decay"],
        max_grad_norm=t["max_grad_norm"],
        seed=t["seed"],
        data_seed=t["seed"],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=t["gradient_checkpointing"] and on_gpu,
        use_cpu=not on_gpu,
        # TRL takes padding_free without packing only with no max_length; packing="bfd" is padding-free too.
        max_length=None if packing == "padding_free" else t["max_seq_len"],
        completion_only_loss=t["loss_on"] == "answer",
        packing=packing == "packed",
        packing_strategy="bfd",
        padding_free=packing != "none",
        use_liger_kernel=t.get("kernels") == "liger",
        pad_to_multiple_of=8,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(conversations(data)),
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]),
            bias="none",
            task_type="CAUSAL_LM",
        ),
        callbacks=[clock := StepClock()],
    )
    trainer.train()
    device = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    out = {"step_times_s": clock.step_times_s, "losses": clock.losses, "train_s": clock.end - clock.begin}
    print(json.dumps(out | {"device": device, "precision": precision}))


if __name__ == "__main__":
    main(sys.argv[1])
