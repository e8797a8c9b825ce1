"""TRL: SFTTrainer + peft LoRA, translated from the job spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.models import QWEN25_CHAT_TEMPLATE
from bench.spec import JobSpec

PAD_TO_MULTIPLE_OF = 8  # what LLaMA-Factory's SFT collator does; identical padding keeps losses bit-comparable


def unsupported_reason(spec: JobSpec) -> str | None:
    return None  # TRL trains on CPU and GPU alike


def lora_kwargs(spec: JobSpec) -> dict[str, Any]:
    lora = spec.train.lora
    return {
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": list(lora.target_modules),
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def sft_kwargs(spec: JobSpec, precision: str, on_gpu: bool) -> dict[str, Any]:
    """SFTConfig arguments for the job. Every training field of the spec must land here (tested)."""
    t = spec.train
    return {
        "output_dir": str(Path(spec.run_dir) / "trainer"),
        "max_steps": t.max_steps,
        "per_device_train_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "learning_rate": t.lr,
        "lr_scheduler_type": t.scheduler,
        "warmup_steps": t.warmup_steps,
        "seed": t.seed,
        "data_seed": t.seed,
        # TRL defaults to bf16 and gradient checkpointing; both are set explicitly from the spec.
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "gradient_checkpointing": t.gradient_checkpointing and on_gpu,
        "use_cpu": not on_gpu,
        "max_length": t.max_seq_len,
        "completion_only_loss": True,  # loss on the answer tokens only
        "packing": False,
        "pad_to_multiple_of": PAD_TO_MULTIPLE_OF,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def model_kwargs(spec: JobSpec, torch_dtype: Any) -> dict[str, Any]:
    return {
        "dtype": torch_dtype,
        "attn_implementation": spec.train.attn_implementation,
        "trust_remote_code": spec.model.trust_remote_code,
    }


def train(ctx) -> dict[str, Any]:
    import datasets
    import peft
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec: JobSpec = ctx.spec
    with ctx.timed("model_load_s"):
        tokenizer = AutoTokenizer.from_pretrained(ctx.model_path, trust_remote_code=spec.model.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(ctx.model_path, **model_kwargs(spec, ctx.torch_dtype))
    if spec.train.chat_template == "qwen2.5" and not tokenizer.chat_template:
        tokenizer.chat_template = QWEN25_CHAT_TEMPLATE
    trainer = trl.SFTTrainer(
        model=model,
        args=trl.SFTConfig(**sft_kwargs(spec, ctx.precision, ctx.on_gpu)),
        train_dataset=datasets.Dataset.from_list(ctx.train_rows),
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(**lora_kwargs(spec)),
        callbacks=ctx.callbacks,
    )
    with ctx.timed("train_s"):
        trainer.train()
    return {"trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}
