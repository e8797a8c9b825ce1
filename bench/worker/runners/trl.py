"""TRL: SFTTrainer + peft LoRA, translated from the job spec."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from bench.core.models import QWEN25_CHAT_TEMPLATE
from bench.core.spec import JobSpec
from bench.worker.runners.base import compute_dtype, kernels_unsupported, quant_unsupported

PAD_TO_MULTIPLE_OF = 8  # what LLaMA-Factory's SFT collator does; identical padding keeps losses bit-comparable
NOT_APPLIED: frozenset[str] = frozenset()
KERNELS = {"liger": "liger_kernel"}  # Trainer's use_liger_kernel
# train.packing -> SFTConfig. padding_free: each batch flattened into one row, positions restarting per
# sequence; packed: best-fit-decreasing packing of whole sequences into rows of max_length (TRL makes that
# padding-free too). Attention stays within each sequence through the position ids.
PACKING = {
    "none": {"packing": False, "padding_free": False},
    "padding_free": {"packing": False, "padding_free": True},
    "packed": {"packing": True, "packing_strategy": "bfd", "padding_free": True},
}


def unsupported_reason(
    spec: JobSpec, cuda_available: bool | None = None, find_spec=importlib.util.find_spec
) -> str | None:
    """TRL trains on CPU and GPU alike; 4-bit base weights and Liger's kernels need a CUDA GPU."""
    return quant_unsupported(spec, cuda_available, find_spec) or kernels_unsupported(
        spec, KERNELS, cuda_available, find_spec
    )


def quantization_kwargs(spec: JobSpec, precision: str) -> dict[str, Any] | None:
    """BitsAndBytesConfig arguments: NF4 base weights (QLoRA) with the job's double quantisation and compute
    dtype, or LLM.int8() weights; None without quantisation."""
    t = spec.train
    if t.quant == "8bit":
        return {"load_in_8bit": True}
    if t.quant != "4bit":
        return None
    return {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": t.quant_double,
        "bnb_4bit_compute_dtype": DTYPES[compute_dtype(spec, precision)],
    }


DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


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
        "optim": t.optimizer,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "seed": t.seed,
        "data_seed": t.seed,
        # TRL defaults to bf16 and gradient checkpointing; both are set explicitly from the spec.
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "gradient_checkpointing": t.gradient_checkpointing and on_gpu,
        "use_cpu": not on_gpu,
        # TRL refuses padding_free without packing under a max_length (it could not enforce it): such rows
        # train whole; the worker's over-length count says whether any row was longer.
        "max_length": None if t.packing == "padding_free" else t.max_seq_len,
        "completion_only_loss": t.loss_on == "answer",
        **PACKING[t.packing],
        "use_liger_kernel": t.kernels == "liger",
        "pad_to_multiple_of": PAD_TO_MULTIPLE_OF,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def model_kwargs(spec: JobSpec, precision: str, torch_dtype: Any) -> dict[str, Any]:
    """from_pretrained arguments; `quantization_config` is plain data here, made a BitsAndBytesConfig in train()."""
    return {
        "dtype": torch_dtype,
        "attn_implementation": spec.train.attn_implementation,
        "trust_remote_code": spec.model.trust_remote_code,
        "quantization_config": quantization_kwargs(spec, precision),
    }


def dataset_kind(spec: JobSpec) -> str:
    """Which rows TRL gets (train_dataset): conversational, plain text, or the harness's token ids."""
    dataset = spec.dataset
    if dataset.tokenize == "harness" or (dataset.prompt_format != "chat" and not dataset.eos):
        return "token_ids"
    return "text" if dataset.prompt_format != "chat" else "conversational"


def translate(spec: JobSpec, precision: str, on_gpu: bool) -> dict[str, Any]:
    return {
        "dataset": dataset_kind(spec),
        "sft": sft_kwargs(spec, precision, on_gpu),
        "lora": lora_kwargs(spec),
        "model": model_kwargs(spec, precision, torch_dtype=precision),
    }


def train_dataset(ctx, eos_token: str):
    """The rows for TRL to render and tokenize: conversational prompt/completion rows (chat format), or text
    prompt/completion rows (plain format, the EOS token ending each completion as TRL appends it). The
    harness's own input_ids and completion_mask (TRL then skips its tokenization) in strict mode, and for a
    plain format without EOS: TRL appends EOS to every text completion and has no switch against it."""
    import datasets

    kind = dataset_kind(ctx.spec)
    if kind == "token_ids":
        rows = ctx.pretokenized()
    elif kind == "text":
        rows = ctx.prompt_completions(eos_token)
    else:
        rows = ctx.conversations
    return datasets.Dataset.from_list(rows)


def notes(spec: JobSpec) -> list[str]:
    out = []
    if spec.dataset.tokenize == "framework" and dataset_kind(spec) == "token_ids":
        out.append("dataset.eos=false: TRL appends EOS to every plain completion, so it trains on the harness's "
                   "token ids (the same prompt / answer split)")  # fmt: skip
    if spec.token_metrics is False:
        out.append("framework.token_metrics=false: SFTTrainer's per-step entropy and mean token accuracy not "
                   "computed (the loss alone)")
    return out


def loss_only_trainer(sft_trainer: type) -> type:
    """SFTTrainer without its per-step token metrics (framework.token_metrics=false), the loss unchanged.

    TRL >= 1.0 takes the loss from a fused LM head that also yields each token's entropy and whether its
    top-1 prediction is right, and gathers both every step (no SFTConfig switch): here the head yields the
    log-probabilities alone and compute_loss keeps only its loss lines (TRL 1.16's default path: no
    compute_loss_func, label smoothing, DFT or MoE auxiliary loss, none of which a job sets). TRL 0.24 took
    the loss from transformers' Trainer.compute_loss and computed the metrics from the logits afterwards:
    there, that compute_loss alone."""
    import torch
    import transformers

    try:
        from trl.trainer.utils import add_fused_lm_head
    except ImportError:  # TRL < 1.0: no fused head
        add_fused_lm_head = None

    class LossOnlySFTTrainer(sft_trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if add_fused_lm_head is not None:
                model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
                add_fused_lm_head(model, outputs=("log_probs",))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            if add_fused_lm_head is None:
                return transformers.Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            outputs = model(**inputs, fused_lm_head=True)
            per_token_loss = -outputs.log_probs  # TRL 1.16's lines, as they are
            num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = per_token_loss.sum() / torch.as_tensor(num_tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            return (loss, outputs) if return_outputs else loss

    return LossOnlySFTTrainer


def train(ctx) -> dict[str, Any]:
    import peft
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec: JobSpec = ctx.spec
    with ctx.timed("model_load_s"):
        tokenizer = AutoTokenizer.from_pretrained(ctx.model_path, trust_remote_code=spec.model.trust_remote_code)
        kwargs = model_kwargs(spec, ctx.precision, ctx.torch_dtype)
        if kwargs["quantization_config"] is not None:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(**kwargs["quantization_config"])
        model = AutoModelForCausalLM.from_pretrained(ctx.model_path, **kwargs)
    if spec.train.chat_template == "qwen2.5" and not tokenizer.chat_template:
        tokenizer.chat_template = QWEN25_CHAT_TEMPLATE
    trainer_class = trl.SFTTrainer if spec.token_metrics is not False else loss_only_trainer(trl.SFTTrainer)
    trainer = trainer_class(
        model=model,
        args=trl.SFTConfig(**sft_kwargs(spec, ctx.precision, ctx.on_gpu)),
        train_dataset=train_dataset(ctx, tokenizer.eos_token),
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(**lora_kwargs(spec)),
        callbacks=ctx.trainer_callbacks,
    )
    trainer.train()
    return {"trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "notes": notes(spec)}  # fmt: skip
