"""The runner contract: what a framework's runner module provides and the context it receives.

A framework is registered by one file, conf/framework/<name>.yaml, naming its runner module and declaring
its facts (distribution, needs_gpu, multi_gpu); the parent reads only that, never the runner. The worker
imports the runner inside the framework's own environment, so a runner imports its framework inside its
functions: the module itself imports anywhere. Standard library only at import.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bench.core.data import Example, PlainFormat, plain_format, to_conversation, tokenize_example
from bench.core.errors import DataError
from bench.core.spec import JobSpec


@runtime_checkable
class Runner(Protocol):
    """A runner module. Optional besides these: `setup()`, imports that must precede transformers
    (Unsloth patches it at import)."""

    # Spec fields the framework does not apply (the run records each as a note); the translation test
    # requires every other field to change the framework's arguments.
    NOT_APPLIED: frozenset[str]

    def unsupported_reason(self, spec: JobSpec) -> str | None:
        """In the worker: why this job cannot run in this environment (the run is then skipped), or None."""

    def translate(self, spec: JobSpec, precision: str, on_gpu: bool) -> dict[str, Any]:
        """The framework's own arguments for the job, as plain data (what train() passes on)."""

    def train(self, ctx: RunContext) -> dict[str, Any]:
        """Train with ctx.trainer_callbacks attached; returns extra facts for the summary (`notes`, ...)."""


@dataclass
class RunContext:
    """What a runner gets: the spec, where the model is, the validated rows, the shared callback, timers."""

    spec: JobSpec
    model_path: str
    examples: list[Example]  # the validated training rows, in file order
    callbacks: list[Any]  # the harness's own, StepRecorder first; a trainer takes them as trainer_callbacks
    on_gpu: bool
    precision: str
    timings: dict[str, float] = field(default_factory=dict)
    _tokenized: list[dict[str, list[int]]] | None = None

    @property
    def trainer_callbacks(self) -> list[Any]:
        """The harness's callbacks as transformers TrainerCallbacks, for the framework's trainer."""
        from bench.worker.callback import trainer_callback

        return [trainer_callback(c) for c in self.callbacks]

    @property
    def conversations(self) -> list[dict[str, Any]]:
        """The examples as conversational prompt/completion rows (system + user -> assistant)."""
        return [to_conversation(ex, self.spec.dataset.system_prompt) for ex in self.examples]

    @property
    def plain(self) -> PlainFormat | None:
        """The job's plain prompt format, or None for the chat format."""
        return plain_format(self.spec.dataset)

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=self.spec.model.trust_remote_code)

    def prompt_completions(self, eos_token: str | None) -> list[dict[str, str]]:
        """Plain format: the examples as text prompt/completion rows, the EOS token (as text) ending each
        completion when dataset.eos is set."""
        return [{"prompt": self.plain.prompt(ex), "completion": self.plain.completion(ex, eos_token)}
                for ex in self.examples]  # fmt: skip

    def tokenized(self) -> list[dict[str, list[int]]]:
        """The examples tokenized once by the harness with the model's tokenizer, uncut."""
        if self._tokenized is None:
            tokenizer = self.tokenizer()
            self._tokenized = [tokenize_example(tokenizer, ex, self.spec.dataset, None) for ex in self.examples]
        return self._tokenized

    def over_length_rows(self) -> int:
        """Rows longer than train.max_seq_len: each framework (or strict mode) truncates them its way."""
        return sum(len(r["input_ids"]) > self.spec.train.max_seq_len for r in self.tokenized())

    def pretokenized(self) -> list[dict[str, list[int]]]:
        """Strict mode (dataset.tokenize=harness): the harness's ids cut at max_seq_len, rows left without an
        answer token dropped (the summary counts them); every framework trains on exactly these. With
        dataset.fill_to, the rows are packed end to end into sequences of exactly that length (memory probes)."""
        if self.spec.dataset.fill_to:
            return packed(self.tokenized(), self.spec.dataset.fill_to)
        cut = self.spec.train.max_seq_len
        rows = [{k: v[:cut] for k, v in r.items()} for r in self.tokenized()]
        kept = [r for r in rows if any(r["completion_mask"])]
        if not kept:
            raise DataError(no_usable_rows(len(rows), cut))
        return kept

    def check_usable(self) -> None:
        """Before training, in the frameworks' own tokenization too: when truncation at max_seq_len leaves no
        row an answer token, stop with the counts rather than let a framework fail on an empty dataset."""
        t = self.spec.train
        if t.loss_on == "all" or t.packing == "padding_free" or self.spec.dataset.tokenize == "harness":
            return  # every token trains, rows are not cut, or pretokenized() has checked
        rows = self.tokenized()
        if not any(any(r["completion_mask"][: t.max_seq_len]) for r in rows):
            raise DataError(no_usable_rows(len(rows), t.max_seq_len))

    @property
    def torch_dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    @contextlib.contextmanager
    def timed(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - start


def no_usable_rows(rows: int, max_seq_len: int) -> str:
    return f"0 usable rows: all {rows} rows have no answer token within train.max_seq_len={max_seq_len}"


def packed(rows: list[dict[str, list[int]]], length: int) -> list[dict[str, list[int]]]:
    """Rows concatenated and cut into sequences of exactly `length` tokens (cycling when there are too few)."""
    ids = [t for r in rows for t in r["input_ids"]]
    mask = [m for r in rows for m in r["completion_mask"]]
    repeat = -(-length // len(ids)) if ids else 0
    ids, mask = ids * max(repeat, 1), mask * max(repeat, 1)
    return [
        {"input_ids": ids[i : i + length], "completion_mask": mask[i : i + length]}
        for i in range(0, len(ids) - length + 1, length)
    ]


IGNORE_INDEX = -100  # the label the Trainer's loss leaves out


def labels(row: dict[str, list[int]], loss_on: str) -> list[int]:
    """Strict mode: the labels of one harness-tokenized row, the answer's tokens only or (loss_on=all) all."""
    ids = row["input_ids"]
    if loss_on == "all":
        return list(ids)
    return [t if m else IGNORE_INDEX for t, m in zip(ids, row["completion_mask"], strict=True)]


def bnb_missing(find_spec=importlib.util.find_spec) -> bool:
    return find_spec("bitsandbytes") is None


def kernels_unsupported(
    spec: JobSpec, offered: dict[str, str], cuda_available: bool | None = None, find_spec=importlib.util.find_spec
) -> str | None:
    """Why train.kernels cannot be honoured here, or None. `offered`: kernel choice -> the module it needs."""
    kernels = spec.train.kernels
    if kernels == "none":
        return None
    if kernels not in offered:
        choices = ", ".join(f"train.kernels={k}" for k in ("none", *offered))
        return f"train.kernels={kernels}: {spec.framework} has no switch for it; it offers {choices}"
    if find_spec(offered[kernels]) is None:
        return f"train.kernels={kernels}: {offered[kernels]} is not installed in this environment"
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return None if cuda_available else f"train.kernels={kernels}: its kernels need a CUDA GPU; torch sees none"


def cuda(cuda_available: bool | None) -> bool:
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return cuda_available


def quant_unsupported(
    spec: JobSpec, cuda_available: bool | None = None, find_spec=importlib.util.find_spec
) -> str | None:
    """Why quantised base weights or an 8-bit optimizer (bitsandbytes) cannot be used here, or None. Shared by
    the runners that offer them."""
    t = spec.train
    asked = [f"train.quant={t.quant}"] if t.quant != "none" else []
    asked += [f"train.optimizer={t.optimizer}"] if t.optimizer.endswith("8bit") else []
    if not asked:
        return None
    if bnb_missing(find_spec):
        return f"{asked[0]}: bitsandbytes is not installed in this environment"
    return None if cuda(cuda_available) else f"{asked[0]}: bitsandbytes needs a CUDA GPU"


def compute_dtype(spec: JobSpec, precision: str) -> str:
    """The dtype 4-bit layers compute in: train.quant_compute_dtype, or the training precision (auto)."""
    dtype = spec.train.quant_compute_dtype
    return precision if dtype == "auto" else dtype
