"""The framework-neutral job spec: the single source of every training hyperparameter.

The parent builds it from the Hydra config, writes it as `spec.json` in the run directory, and every runner
translates it into its framework's own arguments. Standard library only: the worker imports this module
inside each framework's environment.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
CHAT_TEMPLATES = ("qwen2.5",)
QUANTS = ("none", "4bit")
TOKENIZE_MODES = ("framework", "harness")
MODEL_SOURCES = ("pretrained", "random")


class SpecError(ValueError):
    """A configuration value that cannot make a valid job."""


@dataclass(frozen=True)
class LoraSpec:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainSpec:
    lora: LoraSpec = field(default_factory=LoraSpec)
    lr: float = 2e-4
    scheduler: str = "linear"
    warmup_steps: int = 0
    batch_size: int = 2  # per device
    grad_accum: int = 1
    max_seq_len: int = 1024
    max_steps: int = 30
    seed: int = 42
    precision: str = "auto"  # auto: bf16 where the GPU supports it, else fp32
    gradient_checkpointing: bool = False  # forced off on CPU, where it only costs time
    quant: str = "none"  # none | 4bit (bitsandbytes NF4 base weights, QLoRA)
    vram_budget_gb: float | None = None  # cap this process's GPU memory (emulates a smaller card)
    num_gpus: int = 1  # > 1: data parallel, the worker launched with torchrun (one process per GPU)
    attn_implementation: str = "sdpa"
    chat_template: str = "qwen2.5"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # pretrained (hub id or local dir) | random (architecture config, seeded weights)
    path: str  # hub id or local directory; for random, where the built model is cached
    config: dict[str, Any] = field(default_factory=dict)  # architecture (tiny / arch presets)
    trust_remote_code: bool = False


@dataclass(frozen=True)
class DataSpec:
    name: str
    train_files: tuple[str, ...]
    eval_files: tuple[str, ...] = ()
    system_prompt: str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    max_rows: int | None = None
    tokenize: str = "framework"  # framework: each renders and tokenizes; harness: tokenized once, same ids for all
    on_bad_row: str = "error"  # error: stop naming file, line and field; skip: leave it out and count it
    shuffle_seed: int | None = None  # shuffle before taking max_rows
    fill_to: int | None = None  # strict mode only: pack the tokenized rows into sequences of exactly this length


@dataclass(frozen=True)
class EvalSpec:
    enabled: bool = True
    prompts: int = 8  # held-out prompts answered greedily and scored
    max_new_tokens: int = 64
    batch_size: int = 8  # for the held-out loss
    base: bool = False  # also evaluate the base model (adapter disabled): the sweep's reference point


@dataclass(frozen=True)
class JobSpec:
    framework: str
    framework_version: str
    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    run_dir: str
    skip_steps: int = 3
    evaluation: EvalSpec = field(
        default_factory=EvalSpec
    )  # steps excluded from steady-state throughput (compilation, allocator warm-up)

    def validate(self) -> JobSpec:
        t = self.train
        checks = [
            (t.precision in PRECISIONS, f"train.precision={t.precision!r}: expected one of {PRECISIONS}"),
            (t.scheduler in SCHEDULERS, f"train.scheduler={t.scheduler!r}: expected one of {SCHEDULERS}"),
            (t.quant in QUANTS, f"train.quant={t.quant!r}: expected one of {QUANTS}"),
            (
                self.data.tokenize in TOKENIZE_MODES,
                f"dataset.tokenize={self.data.tokenize!r}: expected {TOKENIZE_MODES}",
            ),
            (t.chat_template in CHAT_TEMPLATES, f"train.chat_template={t.chat_template!r}: expected {CHAT_TEMPLATES}"),
            (self.model.source in MODEL_SOURCES, f"model.source={self.model.source!r}: expected {MODEL_SOURCES}"),
            (t.lr > 0, f"train.lr={t.lr}: must be > 0"),
            (t.num_gpus >= 1, f"train.num_gpus={t.num_gpus}: must be >= 1"),
            (t.max_steps > 0, f"train.max_steps={t.max_steps}: must be > 0"),
            (t.batch_size > 0 and t.grad_accum > 0, "train.batch_size and train.grad_accum must be > 0"),
            (t.max_seq_len > 0, f"train.max_seq_len={t.max_seq_len}: must be > 0"),
            (t.lora.r > 0, f"train.lora.r={t.lora.r}: must be > 0"),
            (0 <= t.lora.dropout < 1, f"train.lora.dropout={t.lora.dropout}: must be in [0, 1)"),
            (len(t.lora.target_modules) > 0, "train.lora.target_modules is empty"),
            (self.skip_steps >= 0, f"skip_steps={self.skip_steps}: must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise SpecError(message)
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        return from_mapping(cls, d, "spec")

    @classmethod
    def load(cls, path: str | Path) -> JobSpec:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def resolve_precision(requested: str, on_gpu: bool, bf16_supported: bool) -> str:
    """The precision a run really uses: no half precision on CPU, bf16 only where the GPU has it."""
    if not on_gpu:
        return "fp32"
    if requested == "auto":
        return "bf16" if bf16_supported else "fp32"
    if requested == "bf16" and not bf16_supported:
        raise SpecError("train.precision=bf16: this GPU does not support bf16; use fp16 or fp32")
    return requested


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SpecError(f"{where}: expected a mapping, got {value!r}")
        return from_mapping(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{where}={value!r}: expected a list")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is Any:
        return dict(value) if origin is dict else value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise SpecError(f"{where}={value!r}: expected {tp.__name__}")
    return value


def from_mapping(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass `cls` from plain data, checking every value's type and rejecting unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()})
