"""The framework-neutral job spec: the single source of every training hyperparameter's meaning.

Values come from conf/ (the only place defaults live); the parent validates them once into these types,
writes the spec as `spec.json` in the run directory, and every runner translates it into its framework's
own arguments. Standard library only: the worker imports this module inside each framework's environment.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.core.data import check_prompt_format
from bench.core.errors import SpecError

Precision = Literal["auto", "fp32", "bf16", "fp16"]  # auto: bf16 where the GPU supports it, else fp32
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
ChatTemplate = Literal["qwen2.5"]
Quant = Literal["none", "4bit", "8bit"]  # bitsandbytes base weights: 4bit NF4 (QLoRA) or LLM.int8()
QuantComputeDtype = Literal["auto", "bf16", "fp16", "fp32"]  # auto: the training precision
# The optimizers published runs use; the 8-bit ones are bitsandbytes' and need a CUDA GPU.
Optimizer = Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit"]
LossOn = Literal["answer", "all"]  # answer: loss on the answer tokens only; all: on every token of the row
TokenizeMode = Literal["framework", "harness"]
ModelSource = Literal["pretrained", "random"]
OnBadRow = Literal["error", "skip"]
# How sequences are laid out in a batch: padded to the batch's longest (none), concatenated without padding
# but kept apart by position ids (padding_free), or packed into rows of exactly max_seq_len (packed).
Packing = Literal["none", "padding_free", "packed"]
# liger: Liger's Triton kernels (RMSNorm, RoPE, SwiGLU, ...); unsloth: a framework's own Unsloth integration
# (LLaMA-Factory's use_unsloth). GPU only.
Kernels = Literal["none", "liger", "unsloth"]
# The stack every runner trains on (HF Trainer, peft, TRL under LLaMA-Factory and Unsloth too): the worker
# records these versions for every run, besides each framework's own packages from its conf file.
STACK = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "bitsandbytes", "flash_attn")

MAX_STEPS = 1_000_000  # a bound on train.max_steps (and what train.epochs comes to): beyond it, a typo


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class TrainSpec:
    lora: LoraSpec
    lr: float
    scheduler: Scheduler
    warmup_steps: int
    batch_size: int  # per device
    grad_accum: int
    max_seq_len: int
    # Exactly one of the two is set in the config; the harness turns epochs into the step count every
    # framework stops at (train_steps), so a spec handed to a runner always has max_steps.
    max_steps: int | None
    epochs: float | None
    optimizer: Optimizer
    weight_decay: float
    max_grad_norm: float  # gradient clipping; 0 turns it off
    loss_on: LossOn
    seed: int
    precision: Precision
    gradient_checkpointing: bool  # forced off on CPU, where it only costs time
    quant: Quant
    quant_double: bool  # 4bit: quantise the quantisation constants too (bitsandbytes double quantisation)
    quant_compute_dtype: QuantComputeDtype  # 4bit: the dtype the quantised layers compute in
    vram_budget_gb: float | None  # cap this process's GPU memory (emulates a smaller card)
    num_gpus: int  # > 1: data parallel, the worker launched with torchrun (one process per GPU)
    attn_implementation: str
    chat_template: ChatTemplate
    packing: Packing
    kernels: Kernels


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: ModelSource  # pretrained (hub id or local dir) | random (architecture config, seeded weights)
    path: str  # hub id or local directory; for random, where the built model is cached
    config: dict[str, Any]  # architecture (tiny / arch presets)
    trust_remote_code: bool


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    # What the run reads: the rows selected from the source, in order (bench.sweep.selection), never the source itself.
    train_file: str
    eval_file: str | None  # the held-out rows; None without a held-out split
    selection_sha256: str  # the selected rows' content (train, then held-out): the data's identity
    source_files: tuple[str, ...]  # where the training rows were selected from
    eval_source_files: tuple[str, ...]  # where the held-out rows were
    source_sha256: tuple[str, ...]  # each source file's content: source_files, then eval_source_files
    system_prompt: str  # chat format only
    # chat: the model's chat template (system prompt, user turn, answer); otherwise a plain format string over
    # the row's fields, ending with {output} (bench.core.data.PlainFormat), the EOS token after it when `eos`.
    prompt_format: str
    eos: bool
    # How the rows were selected (recorded; the job is identified by what they selected, selection_sha256)
    max_rows: int | None
    on_bad_row: OnBadRow  # error: stop naming file, line and field; skip: leave it out and count it
    shuffle_seed: int | None  # a seeded sample of max_rows rows (bench.sweep.selection.keyed_order), or the first rows
    max_row_bytes: int  # a larger row is a bad row (dataset.on_bad_row)
    tokenize: TokenizeMode  # framework: each renders and tokenizes; harness: tokenized once, same ids for all
    fill_to: int | None  # strict mode only: pack the tokenized rows into sequences of exactly this length


# Where the data came from and how it was selected: recorded, but the job is what was selected.
DATASET_PROVENANCE = ("name", "train_file", "eval_file", "source_files", "eval_source_files", "source_sha256",
                      "max_rows", "on_bad_row", "shuffle_seed", "max_row_bytes")  # fmt: skip


@dataclass(frozen=True)
class EvalSpec:
    enabled: bool
    prompts: int  # held-out prompts answered greedily and scored
    max_new_tokens: int
    batch_size: int  # for the held-out loss
    every_steps: int | None  # also take the held-out loss every N optimizer steps during training
    target_loss: float | None  # held-out loss that counts as "trained": time and steps to reach it
    base: bool = False  # set by the harness, not the user: also evaluate the base model (the sweep's first run)


@dataclass(frozen=True)
class ProfileSpec:
    """How a run looks inside its steps; never part of the job (profile.* in conf/config.yaml)."""

    phases: bool = True  # each step's time by phase (bench/worker/phases.py)
    steps: str | None = None  # "A-B": a torch.profiler trace of steps A to B, and its top operators

    def step_range(self) -> tuple[int, int] | None:
        if self.steps is None:
            return None
        first, sep, last = str(self.steps).partition("-")
        if not (sep and first.strip().isdigit() and last.strip().isdigit()):
            raise SpecError(f"profile.steps={self.steps}: expected A-B, the first and last optimizer step (3-5)")
        return int(first), int(last)


@dataclass(frozen=True)
class JobSpec:
    framework: str
    framework_version: str  # as configured; the summary records what was installed
    runner: str  # the runner module (conf/framework/<name>.yaml)
    packages: tuple[str, ...]  # distributions whose versions identify the framework; the first is the framework
    model: ModelSpec
    dataset: DatasetSpec
    train: TrainSpec
    eval: EvalSpec
    skip_steps: int  # first steps left out of steady-state throughput (compilation, allocator warm-up)
    run_dir: str
    # How the run is observed and what the framework computes besides the job: not part of the job (job_fields)
    profile: ProfileSpec = field(default_factory=ProfileSpec)
    token_metrics: bool | None = None  # framework.token_metrics: TRL's per-token metrics on (None: its default)

    def validate(self) -> JobSpec:
        t = self.train
        if bad := non_finite(self):
            name, value = bad[0]
            raise SpecError(f"{name}={value}: must be a finite number")
        checks = [
            (t.max_steps is None or t.max_steps <= MAX_STEPS, f"train.max_steps={t.max_steps}: more than "
             f"{MAX_STEPS:,} optimizer steps; set fewer"),
            (t.lr > 0, f"train.lr={t.lr}: must be > 0"),
            (t.num_gpus >= 1, f"train.num_gpus={t.num_gpus}: must be >= 1"),
            (t.max_steps is not None, "train.max_steps: not resolved from train.epochs (bench.sweep.app.train_steps)"),
            (t.max_steps is None or t.max_steps > 0, f"train.max_steps={t.max_steps}: must be > 0"),
            (t.epochs is None or t.epochs > 0, f"train.epochs={t.epochs}: must be > 0"),
            (t.weight_decay >= 0, f"train.weight_decay={t.weight_decay}: must be >= 0"),
            (t.max_grad_norm >= 0, f"train.max_grad_norm={t.max_grad_norm}: must be >= 0 (0: no clipping)"),
            (t.warmup_steps >= 0, f"train.warmup_steps={t.warmup_steps}: must be >= 0"),
            (t.batch_size > 0 and t.grad_accum > 0, "train.batch_size and train.grad_accum must be > 0"),
            (t.max_seq_len > 0, f"train.max_seq_len={t.max_seq_len}: must be > 0"),
            (t.lora.r > 0, f"train.lora.r={t.lora.r}: must be > 0"),
            (0 <= t.lora.dropout < 1, f"train.lora.dropout={t.lora.dropout}: must be in [0, 1)"),
            (len(t.lora.target_modules) > 0, "train.lora.target_modules is empty"),
            (
                self.dataset.max_rows is None or self.dataset.max_rows > 0,
                f"dataset.max_rows={self.dataset.max_rows}: > 0",
            ),
            (self.eval.prompts >= 0, f"eval.prompts={self.eval.prompts}: must be >= 0"),
            *profile_checks(self.profile, t.max_steps),
            (
                self.eval.every_steps is None or self.eval.every_steps > 0,
                f"eval.every_steps={self.eval.every_steps}: must be > 0 (or null: no evaluation during training)",
            ),
            (
                self.eval.target_loss is None or self.eval.every_steps is not None,
                "eval.target_loss needs the held-out loss during training: set eval.every_steps=N as well",
            ),
            (self.skip_steps >= 0, f"skip_steps={self.skip_steps}: must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise SpecError(message)
        check_prompt_format(self.dataset, t.loss_on)
        return self

    def job_fields(self) -> dict[str, Any]:
        """What makes two runs the same job, flattened (`train.lr`, ...): every field of the resolved job
        except the framework, its version, the seed and where the run is written. A built model is
        identified by its recipe, data by the content of the rows selected (wherever they came from, however
        they were selected), so the key holds across machines and checkouts."""
        model = dataclasses.asdict(self.model)
        if self.model.source == "random":
            model.pop("path")  # the cache directory it was built into
        dataset = {k: v for k, v in dataclasses.asdict(self.dataset).items() if k not in DATASET_PROVENANCE}
        train = dataclasses.asdict(self.train)
        train.pop("seed")
        # Kernels are how a framework runs the job, as the framework itself is: part of the system under test
        # (system()), not of the job, so "HF", "HF+Liger" and "Unsloth" are compared on one job.
        train.pop("kernels")
        # profile and token_metrics are how the run is observed and what the framework computes besides the
        # job (a token_metrics=false run trains the same tokens to the same losses): not the job itself.
        eval_ = dataclasses.asdict(self.eval)
        eval_.pop("base")
        # The job key's field names are frozen ("data", not "dataset") so a key stays comparable across versions.
        job = {"model": model, "data": dataset, "train": train, "eval": eval_, "skip_steps": self.skip_steps}
        return flatten(job)

    def system(self) -> str:
        """What is being compared on the job: the framework, with the kernels it was asked to use."""
        return self.framework if self.train.kernels == "none" else f"{self.framework}+{self.train.kernels}"

    def job_key(self, ignore: tuple[str, ...] = ()) -> str:
        """The identity of the job (see job_fields): one short hash, stored in every summary. `ignore`: fields
        a search varies on purpose (the memory frontier's axis and budget)."""
        fields = {k: v for k, v in self.job_fields().items() if k not in ignore}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        return from_mapping(cls, d, "spec")

    @classmethod
    def load(cls, path: str | Path) -> JobSpec:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def profile_checks(profile: ProfileSpec, max_steps: int | None) -> list[tuple[bool, str]]:
    """profile.steps within the run's steps, in order (checked before any run starts)."""
    found = profile.step_range()
    if found is None or max_steps is None:
        return []
    first, last = found
    return [(1 <= first <= last, f"profile.steps={profile.steps}: the first step must be >= 1 and <= the last"),
            (last <= max_steps, f"profile.steps={profile.steps}: the run has {max_steps} steps (train.max_steps); "
             "profile steps within them")]  # fmt: skip


def non_finite(spec: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Every float of a spec (its dataclasses, walked field by field) that is NaN or infinite, by its key: the
    check follows the fields, so a new one cannot miss it."""
    out = []
    for f in dataclasses.fields(spec):
        value, name = getattr(spec, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += non_finite(value, f"{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            out.append((name, value))
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested spec data as `train.lora.r`-style keys; a model's architecture stays one value."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and k != "config":
            out |= flatten(v, f"{name}.")
        else:
            out[name] = list(v) if isinstance(v, tuple) else v
    return out


def resolve_precision(requested: str, on_gpu: bool, bf16_supported: bool) -> str:
    """The precision a run really uses: no half precision on CPU, bf16 only where the GPU has it."""
    if not on_gpu:
        return "fp32"
    if requested == "auto":
        return "bf16" if bf16_supported else "fp32"
    if requested == "bf16" and not bf16_supported:
        raise SpecError("train.precision=bf16: this GPU does not support bf16; set train.precision=fp16 or fp32")
    return requested


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _coerce(options[0], value, where)
        for inner in options:  # the first type the value is (int | float: an int stays an int)
            try:
                return _coerce(inner, value, where)
            except SpecError:
                continue
        raise SpecError(f"{where}={value!r}: expected {' or '.join(getattr(a, '__name__', str(a)) for a in options)}")
    if origin is Literal:
        if value not in args:
            raise SpecError(f"{where}={value!r}: expected one of {', '.join(map(str, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SpecError(f"{where}: expected a mapping, got {value!r}")
        return from_mapping(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{where}={value!r}: expected a list")
        return origin(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{where}={value!r}: expected a mapping")
        return {k: _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()} if args else dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise SpecError(f"{where}={value!r}: expected {tp.__name__}")
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # resolved once per class: a run's steps and samples are many


def from_mapping(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass `cls` from plain data, checking every value's type and enum, rejecting unknown keys
    and naming missing ones: the one validation every config group goes through."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(f"{where or 'config'}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    missing = [n for n, f in fields.items() if n not in data and f.default is f.default_factory is dataclasses.MISSING]
    if missing:
        raise SpecError(f"{where or 'config'}: missing key(s) {', '.join(missing)}")
    hints = _hints(cls)
    return cls(**{k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()})
