"""Unsloth: FastLanguageModel + its LoRA (get_peft_model), trained with TRL's SFTTrainer.

Unsloth patches transformers/trl/peft when imported, so `setup()` imports it before anything else.
On a machine without a GPU `import unsloth` succeeds and silently switches to a slow CPU backend: a run
there would not be an Unsloth result, so "cannot run here" is decided before importing it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from bench.core.spec import JobSpec
from bench.worker.runners import trl as trl_runner
from bench.worker.runners.base import quant_unsupported

NEEDS_GPU = "Unsloth requires an NVIDIA/AMD/Intel GPU"
PACKAGES = ("unsloth", "unsloth_zoo", "triton")
# Unsloth picks its own attention kernels, and always uses its own kernels (train.kernels=none included).
NOT_APPLIED: frozenset[str] = frozenset({"attn_implementation", "kernels"})


def unsupported_reason(
    spec: JobSpec, cuda_available: bool | None = None, find_spec=importlib.util.find_spec
) -> str | None:
    missing = [p for p in PACKAGES if find_spec(p) is None]
    if missing:
        return f"not installed in this environment: {', '.join(missing)}"
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        return f"{NEEDS_GPU}; torch sees none (its CPU fallback would not be an Unsloth result)"
    if spec.train.kernels == "liger":
        return "train.kernels=liger: Unsloth uses its own kernels (compare framework=trl train.kernels=liger)"
    return quant_unsupported(spec, cuda_available, find_spec) or quant_settings_unsupported(spec)


def quant_settings_unsupported(spec: JobSpec, precision: str | None = None) -> str | None:
    """Unsloth builds its own 4-bit config: double quantisation, computing in the model's dtype."""
    t = spec.train
    if t.quant != "4bit":
        return None
    if not t.quant_double:
        return "train.quant_double=false: Unsloth always double-quantises its 4-bit weights"
    if t.quant_compute_dtype not in ("auto", precision or spec.train.precision):
        return f"train.quant_compute_dtype={t.quant_compute_dtype}: Unsloth computes 4-bit layers in the training dtype"
    return None


def setup() -> None:
    os.environ["UNSLOTH_DISABLE_CPU_FALLBACK"] = "1"  # fail rather than train on the CPU backend
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    import unsloth  # noqa: F401  (must precede transformers, trl and peft: it patches them)
    from unsloth.device_type import DEVICE_TYPE

    if DEVICE_TYPE not in ("cuda", "hip", "xpu"):
        raise RuntimeError(f"Unsloth selected device {DEVICE_TYPE!r}; {NEEDS_GPU}")


def from_pretrained_kwargs(spec: JobSpec, torch_dtype: Any) -> dict[str, Any]:
    return {
        "max_seq_length": spec.train.max_seq_len,
        "dtype": torch_dtype,
        "load_in_4bit": spec.train.quant == "4bit",
        "load_in_8bit": spec.train.quant == "8bit",
        "trust_remote_code": spec.model.trust_remote_code,
        "attn_implementation": spec.train.attn_implementation,
        "random_state": spec.train.seed,
    }


def peft_kwargs(spec: JobSpec) -> dict[str, Any]:
    lora = trl_runner.lora_kwargs(spec)
    return {
        "r": lora["r"],
        "lora_alpha": lora["lora_alpha"],
        "lora_dropout": lora["lora_dropout"],
        "target_modules": lora["target_modules"],
        "bias": lora["bias"],
        # Unsloth's own offloaded checkpointing when the job asks for checkpointing at all.
        "use_gradient_checkpointing": "unsloth" if spec.train.gradient_checkpointing else False,
        "random_state": spec.train.seed,
    }


def sft_kwargs(spec: JobSpec, precision: str, on_gpu: bool) -> dict[str, Any]:
    # Checkpointing is already applied by get_peft_model; asking the Trainer too would wrap it twice.
    # packing/padding_free come from the spec explicitly (trl_runner.PACKING): Unsloth turns padding-free
    # on by itself only when padding_free is left unset, so train.packing=none stays padded here.
    return trl_runner.sft_kwargs(spec, precision, on_gpu) | {"gradient_checkpointing": False, "use_liger_kernel": False}


def translate(spec: JobSpec, precision: str, on_gpu: bool) -> dict[str, Any]:
    return {
        "dataset": trl_runner.dataset_kind(spec),
        "load": from_pretrained_kwargs(spec, torch_dtype=precision),
        "peft": peft_kwargs(spec),
        "sft": sft_kwargs(spec, precision, on_gpu),
    }


def train(ctx) -> dict[str, Any]:
    import trl
    from unsloth import FastLanguageModel

    spec: JobSpec = ctx.spec
    with ctx.timed("model_load_s"):
        model, tokenizer = FastLanguageModel.from_pretrained(
            ctx.model_path, **from_pretrained_kwargs(spec, ctx.torch_dtype)
        )
        model = FastLanguageModel.get_peft_model(model, **peft_kwargs(spec))
    trainer = trl.SFTTrainer(
        model=model,
        args=trl.SFTConfig(**sft_kwargs(spec, ctx.precision, ctx.on_gpu)),
        train_dataset=trl_runner.train_dataset(ctx, tokenizer.eos_token),
        processing_class=tokenizer,
        callbacks=ctx.trainer_callbacks,
    )
    trainer.train()
    return {"notes": trl_runner.notes(spec)}
