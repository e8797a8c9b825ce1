"""Axolotl: its Python API (`load_cfg`, `load_datasets`, `axolotl.train.train`) with the job spec as its config.

The rows go in as a JSON Lines file of chat messages (system, user, assistant) written into the run
directory, rendered by Axolotl's `chat_template` strategy with the harness's Qwen2.5 template. In strict mode
(dataset.tokenize=harness) Axolotl gets the harness's token ids and labels instead and tokenizes nothing.

`train()` takes no callbacks, so the harness's callback reaches Axolotl's Trainer through Axolotl's own
plugin hook (`add_callbacks_pre_trainer`); the same plugin seeds the LoRA initialisation right before the
adapter is created, where TRL seeds it, so both start from the same adapter weights.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

from bench.core.data import ASSETS
from bench.core.spec import JobSpec
from bench.worker.runners.base import compute_dtype, kernels_unsupported, labels, quant_unsupported

PAD_TO_MULTIPLE_OF = 8  # as TRL and LLaMA-Factory pad: identical padding keeps losses bit-comparable
TEMPLATES = {"qwen2.5": ASSETS / "qwen2.5_chat_template.jinja"}  # the template the harness renders with
# What ends an assistant turn in each template besides the tokenizer's EOS token: Qwen2.5's template puts a
# newline after <|im_end|>. TRL and LLaMA-Factory train on the whole rendered answer, that newline included;
# Axolotl labels the answer, the EOS token (train_on_eos) and the first end-of-turn token after it
# (train_on_eot), so naming the newline as that token gives it the same labels.
END_OF_TURN = {"qwen2.5": ["\n"]}
ATTENTION = ("sdpa", "eager", "flash_attention_2")
PLUGIN = f"{__name__}.HarnessPlugin"  # Axolotl loads plugins by dotted name: this module's class below
NOT_APPLIED: frozenset[str] = frozenset()
# train.packing -> its config. padding_free: batch_flattening (DataCollatorWithFlattening), which Axolotl
# allows only with a varlen attention backend; packed: its multipack sampler filling rows of sequence_len,
# attention kept within each sequence.
PACKING = {
    "none": {"sample_packing": False},
    "padding_free": {"sample_packing": False, "batch_flattening": True},
    "packed": {"sample_packing": True},
}
LORA_KERNELS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")
VARLEN_ATTENTION = ("flash_attention_2",)
KERNELS = {"liger": "liger_kernel"}  # its Liger plugin; it has no Unsloth switch
# The kernels TRL's use_liger_kernel applies by default (transformers' _apply_liger_kernel_to_instance).
LIGER_PLUGIN = "axolotl.integrations.liger.LigerPlugin"
LIGER = {
    "liger_rope": True,
    "liger_rms_norm": True,
    "liger_glu_activation": True,
    "liger_fused_linear_cross_entropy": True,
}


def unsupported_reason(
    spec: JobSpec, cuda_available: bool | None = None, find_spec=importlib.util.find_spec
) -> str | None:
    t = spec.train
    if t.attn_implementation not in ATTENTION:
        return f"train.attn_implementation={t.attn_implementation}: the harness drives Axolotl with {list(ATTENTION)}"
    if t.packing == "padding_free" and t.attn_implementation not in VARLEN_ATTENTION:
        return (
            f"train.packing=padding_free: Axolotl's batch_flattening needs a varlen attention backend "
            f"(train.attn_implementation=flash_attention_2), not {t.attn_implementation}"
        )
    if t.warmup_steps == 1:  # Axolotl's trainer builder turns a warmup of 1 step into 2
        return "train.warmup_steps=1: Axolotl trains it as 2 warmup steps; use 0 or >= 2"
    return quant_unsupported(spec, cuda_available, find_spec) or kernels_unsupported(
        spec, KERNELS, cuda_available, find_spec
    )


def config(spec: JobSpec, model_path: str, data_dir: Path, precision: str, on_gpu: bool) -> dict[str, Any]:
    """Axolotl's config for the job. Every training field of the spec must land here (tested)."""
    t, lora = spec.train, spec.train.lora
    return {
        "base_model": model_path,
        "trust_remote_code": spec.model.trust_remote_code,
        "attn_implementation": t.attn_implementation,
        "adapter": "qlora" if t.quant == "4bit" else "lora",
        "load_in_4bit": t.quant == "4bit",
        "load_in_8bit": t.quant == "8bit",
        **({"bnb_config_kwargs": bnb_4bit(spec, precision)} if t.quant == "4bit" else {}),
        "lora_r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "lora_target_modules": list(lora.target_modules),
        # Axolotl switches its own fused LoRA Triton kernels on by default (CUDA only); off, the adapter runs
        # through peft as in TRL and LLaMA-Factory. train.kernels names the kernels a run asks for.
        **dict.fromkeys(LORA_KERNELS, False),
        "datasets": [dataset_entry(spec, data_dir)],
        "eot_tokens": END_OF_TURN[t.chat_template],
        "dataset_prepared_path": str(data_dir / "prepared"),  # its cache, by default under the working directory
        "dataset_num_proc": 1,
        "shuffle_merged_datasets": False,  # the Trainer's seeded sampler orders the rows, as in TRL
        "val_set_size": 0,
        "sequence_len": t.max_seq_len,
        "excess_length_strategy": "truncate",  # cut the end, as TRL does (Axolotl's default drops the row)
        "train_on_inputs": t.loss_on == "all",
        **PACKING[t.packing],
        "pad_to_multiple_of": PAD_TO_MULTIPLE_OF,
        "output_dir": str(Path(spec.run_dir) / "trainer"),
        "micro_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "learning_rate": t.lr,
        "lr_scheduler": t.scheduler,
        "warmup_steps": t.warmup_steps,
        "max_steps": t.max_steps,
        "num_epochs": 1,  # max_steps decides; the Trainer repeats the data as needed
        "seed": t.seed,
        "optimizer": t.optimizer,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "tf32": False,
        "gradient_checkpointing": t.gradient_checkpointing and on_gpu,
        "logging_steps": 1,
        "save_strategy": "no",
        "dataloader_num_workers": 0,
        **(LIGER if t.kernels == "liger" else {}),
        "plugins": [PLUGIN, *([LIGER_PLUGIN] if t.kernels == "liger" else [])],
    }


def bnb_4bit(spec: JobSpec, precision: str) -> dict[str, Any]:
    """Its BitsAndBytesConfig for 4-bit weights: NF4, the job's double quantisation and compute dtype."""
    dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[compute_dtype(spec, precision)]
    return {"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": spec.train.quant_double,
            "bnb_4bit_compute_dtype": dtype}  # fmt: skip


def dataset_entry(spec: JobSpec, data_dir: Path) -> dict[str, Any]:
    """The training file as Axolotl reads it: chat messages through the harness's template, or (strict mode)
    rows that are already input_ids / attention_mask / labels, which Axolotl uses as they are (no `type`)."""
    if spec.dataset.tokenize == "harness":
        return {"path": str(data_dir / "tokenized.jsonl"), "ds_type": "json"}
    if spec.dataset.prompt_format != "chat":  # template-free: the harness's prompt and answer as labelled segments
        return {"path": str(data_dir / "segments.jsonl"), "ds_type": "json", "type": "input_output"}
    return {
        "path": str(data_dir / "train.jsonl"),
        "ds_type": "json",
        "type": "chat_template",
        "field_messages": "messages",
        "chat_template": "jinja",
        "chat_template_jinja": str(TEMPLATES[spec.train.chat_template]),
        "roles_to_train": ["assistant"],
        "train_on_eos": "turn",
        "train_on_eot": "turn",
    }


def translate(spec: JobSpec, precision: str, on_gpu: bool) -> dict[str, Any]:
    return config(spec, "<model>", Path("<data>"), precision, on_gpu)


def write_messages(conversations: list[dict[str, Any]], path: Path) -> None:
    """The harness's conversations (system + user prompt, assistant answer) as one messages list per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps({"messages": c["prompt"] + c["completion"]}, ensure_ascii=False) for c in conversations)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_segments(rows: list[dict[str, str]], loss_on: str, path: Path) -> None:
    """Plain format: each row's prompt and answer as Axolotl's input_output segments, the prompt labelled only
    with loss_on=all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            segments = [{"text": r["prompt"], "label": loss_on == "all"}, {"text": r["completion"], "label": True}]
            f.write(json.dumps({"segments": segments}, ensure_ascii=False) + "\n")


def write_tokenized(rows: list[dict[str, list[int]]], loss_on: str, path: Path) -> None:
    """Strict mode: the harness's ids with labels on the answer tokens (or, loss_on=all, on every token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            ids = r["input_ids"]
            f.write(json.dumps({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels(r, loss_on)}))
            f.write("\n")


@functools.cache
def plugin_class():
    """Axolotl's plugin base class is only importable inside its environment: the plugin is made on demand."""
    from axolotl.integrations.base import BasePlugin

    class HarnessPlugin(BasePlugin):
        """Seeds the LoRA initialisation as TRL does and attaches the harness's callbacks to the Trainer."""

        callbacks: list[Any] = []

        def pre_lora_load(self, cfg, model):
            from transformers import set_seed

            set_seed(cfg.seed)

        def add_callbacks_pre_trainer(self, cfg, model):
            return list(self.callbacks)

    return HarnessPlugin


def __getattr__(name: str):
    if name == "HarnessPlugin":  # what Axolotl's plugin loader asks this module for
        return plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def train(ctx) -> dict[str, Any]:
    import yaml
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets
    from axolotl.integrations.base import PluginManager
    from axolotl.train import train as axolotl_train

    spec: JobSpec = ctx.spec
    data_dir = Path(spec.run_dir) / "axolotl_data"
    if spec.dataset.tokenize == "harness":
        write_tokenized(ctx.pretokenized(), spec.train.loss_on, data_dir / "tokenized.jsonl")
    elif ctx.plain:
        eos = ctx.tokenizer().eos_token if ctx.plain.eos else None
        write_segments(ctx.prompt_completions(eos), spec.train.loss_on, data_dir / "segments.jsonl")
    else:
        write_messages(ctx.conversations, data_dir / "train.jsonl")
    # Its config file in the run directory: given a mapping instead, load_cfg leaves a copy in the temp dir.
    config_file = data_dir / "config.yml"
    config_file.write_text(yaml.safe_dump(config(spec, ctx.model_path, data_dir, ctx.precision, ctx.on_gpu)), "utf-8")
    cfg = load_cfg(str(config_file))
    PluginManager.get_instance().plugins[PLUGIN].callbacks = ctx.trainer_callbacks
    dataset_meta = load_datasets(cfg=cfg)
    axolotl_train(cfg=cfg, dataset_meta=dataset_meta)
    return {}
