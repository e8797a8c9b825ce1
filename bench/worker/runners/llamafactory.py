"""LLaMA-Factory: its Python API (`llamafactory.train.tuner.run_exp`) with the job spec as its arguments.

The training rows are handed over in LLaMA-Factory's own format: an alpaca JSON file plus a
dataset_info.json, written into the run directory (never next to the user's data). The system prompt goes
in as a column, so its `qwen` template renders the same system turn the other frameworks render.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

from bench.core.data import Example, PlainFormat, plain_format
from bench.core.spec import JobSpec
from bench.worker.runners.base import kernels_unsupported, labels, quant_unsupported

DATASET = "sftbench_train"
TEMPLATES = {"qwen2.5": "qwen"}
# Plain formats: the harness renders the prompt into the instruction column and the answer (with the EOS
# token as text, when asked) into the output column; `empty` adds nothing around them.
PLAIN_TEMPLATE = "empty"
QUANT_BITS = {"none": None, "4bit": 4, "8bit": 8}
ATTENTION = {"sdpa": "sdpa", "eager": "disabled", "flash_attention_2": "fa2"}
NOT_APPLIED: frozenset[str] = frozenset()
KERNELS = {"liger": "liger_kernel", "unsloth": "unsloth"}  # enable_liger_kernel, use_unsloth
# train.packing -> its data arguments. packed: whole sequences packed into rows of cutoff_len, attention kept
# within each (neat_packing). It has no padding-free batching without packing.
PACKING = {"none": {"packing": False, "neat_packing": False}, "packed": {"packing": True, "neat_packing": True}}


def unsupported_reason(
    spec: JobSpec, cuda_available: bool | None = None, find_spec=importlib.util.find_spec
) -> str | None:
    if spec.train.attn_implementation not in ATTENTION:
        offered = ", ".join(f"train.attn_implementation={a}" for a in ATTENTION)
        return f"train.attn_implementation={spec.train.attn_implementation}: LLaMA-Factory offers {offered}"
    if spec.train.packing not in PACKING:
        return (
            f"train.packing={spec.train.packing}: LLaMA-Factory has no padding-free batching without packing "
            "(use train.packing=packed, its neat_packing)"
        )
    t = spec.train
    if t.quant == "4bit" and t.quant_compute_dtype not in ("auto", t.precision):
        return (f"train.quant_compute_dtype={t.quant_compute_dtype}: LLaMA-Factory computes 4-bit layers in the "
                f"training precision (train.precision={t.precision}); set train.quant_compute_dtype=auto")  # fmt: skip
    return quant_unsupported(spec, cuda_available, find_spec) or kernels_unsupported(
        spec, KERNELS, cuda_available, find_spec
    )


def alpaca_rows(examples: list[Example], system_prompt: str, plain: PlainFormat | None, eos: str) -> list[dict]:
    """Chat format: the alpaca fields and a system column, for its chat template. Plain format: the prompt and
    the answer rendered by the harness, for its `empty` template."""
    if plain is None:
        return [dataclasses.asdict(ex) | {"system": system_prompt} for ex in examples]
    return [{"instruction": plain.prompt(ex), "input": "", "output": plain.completion(ex, eos)} for ex in examples]


def write_dataset(rows: list[dict], data_dir: Path) -> None:
    """The rows as an alpaca file (a system column when they have one), registered in a dataset_info.json."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "train.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    info = {
        DATASET: {
            "file_name": "train.json",
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"}
            | ({"system": "system"} if rows and "system" in rows[0] else {}),
        }
    }
    (data_dir / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


def write_tokenized(rows: list[dict[str, list[int]]], loss_on: str, path: Path) -> None:
    """Strict mode: the harness's token ids as a dataset LLaMA-Factory loads as is (`tokenized_path`)."""
    import datasets

    def as_features(r: dict[str, list[int]]) -> dict[str, list[int]]:
        return {"input_ids": r["input_ids"], "attention_mask": [1] * len(r["input_ids"]), "labels": labels(r, loss_on)}

    datasets.DatasetDict({"train": datasets.Dataset.from_list([as_features(r) for r in rows])}).save_to_disk(path)


def run_args(spec: JobSpec, model_path: str, data_dir: Path, precision: str, on_gpu: bool) -> dict[str, Any]:
    """run_exp's arguments for the job. Every training field of the spec must land here (tested)."""
    t, lora = spec.train, spec.train.lora
    return {
        "model_name_or_path": model_path,
        "trust_remote_code": spec.model.trust_remote_code,
        "flash_attn": ATTENTION[t.attn_implementation],
        "quantization_bit": QUANT_BITS[t.quant],
        "double_quantization": t.quant_double,
        # LLaMA-Factory checkpoints by default; it only costs time on CPU and follows the spec elsewhere.
        "disable_gradient_checkpointing": not (t.gradient_checkpointing and on_gpu),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "lora_target": ",".join(lora.target_modules),
        "dataset": DATASET,
        "dataset_dir": str(data_dir),
        "template": TEMPLATES[t.chat_template] if spec.dataset.prompt_format == "chat" else PLAIN_TEMPLATE,
        "cutoff_len": t.max_seq_len,
        "train_on_prompt": t.loss_on == "all",
        **PACKING.get(t.packing, {}),
        "enable_liger_kernel": t.kernels == "liger",
        "use_unsloth": t.kernels == "unsloth",
        "overwrite_cache": True,
        **({"tokenized_path": str(data_dir / "tokenized")} if spec.dataset.tokenize == "harness" else {}),
        "output_dir": str(Path(spec.run_dir) / "trainer"),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "learning_rate": t.lr,
        "lr_scheduler_type": t.scheduler,
        "warmup_steps": t.warmup_steps,
        "max_steps": t.max_steps,
        "optim": t.optimizer,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "seed": t.seed,
        "data_seed": t.seed,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "use_cpu": not on_gpu,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "plot_loss": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def translate(spec: JobSpec, precision: str, on_gpu: bool) -> dict[str, Any]:
    return run_args(spec, "<model>", Path("<data>"), precision, on_gpu)


def train(ctx) -> dict[str, Any]:
    from llamafactory.train.tuner import run_exp

    spec: JobSpec = ctx.spec
    data_dir = Path(spec.run_dir) / "llamafactory_data"
    eos = ctx.tokenizer().eos_token if ctx.plain and ctx.plain.eos else ""
    write_dataset(alpaca_rows(ctx.examples, spec.dataset.system_prompt, plain_format(spec.dataset), eos), data_dir)
    if spec.dataset.tokenize == "harness":
        write_tokenized(ctx.pretokenized(), spec.train.loss_on, data_dir / "tokenized")
    run_exp(args=run_args(spec, ctx.model_path, data_dir, ctx.precision, ctx.on_gpu), callbacks=ctx.trainer_callbacks)
    notes = []
    if spec.train.packing == "packed":  # its data arguments shorten cutoff_len by one whenever packing is on
        notes.append(f"LLaMA-Factory packs into rows of {spec.train.max_seq_len - 1} tokens (cutoff_len - 1)")
    if spec.train.loss_on == "all" and counts_first_label():
        notes.append("train.loss_on=all: this Trainer's loss denominator counts each row's first token, which no "
                     "position predicts; its loss and gradients are (labelled - rows) / labelled of an exact mean")
    return {"notes": notes}


def counts_first_label() -> bool:
    """Whether the installed Trainer counts labels before the causal shift when it normalises the loss
    (transformers before the shifted count): the first label of every row then adds to the denominator."""
    import inspect

    from transformers import Trainer

    return "[..., 1:]" not in inspect.getsource(Trainer.get_batch_samples)
