"""Runs one job inside a framework's environment: `python -m bench.worker RUN_DIR/spec.json`.

Writes `events.jsonl` (one line per optimizer step, flushed as it goes) and `worker.json` (status, reason,
timings, torch peak memory, package versions, hardware). The parent turns those into the run's summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import results
from bench.data import DataReport, Example, load_examples, to_conversation, tokenize_conversation
from bench.spec import JobSpec, resolve_precision

RANK = int(os.environ.get("RANK", "0"))  # set by torchrun for data-parallel runs (train.num_gpus > 1)
PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "llamafactory",
    "unsloth",
    "unsloth_zoo",
    "bitsandbytes",
    "triton",
    "xformers",
    "flash_attn",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def hardware() -> dict[str, Any]:
    import torch

    hw: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpus": [],
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            hw["gpus"].append(
                {"name": p.name, "memory_mb": p.total_memory / 2**20, "capability": f"{p.major}.{p.minor}"}
            )
    return hw


def torch_peak_memory() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {
        "torch_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
        "torch_max_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
    }


@dataclass
class RunContext:
    """What a runner gets: the spec, where the model is, rendered rows, the shared callback, timers."""

    spec: JobSpec
    model_path: str
    examples: list[Example]  # the validated training rows, in file order
    callbacks: list[Any]
    on_gpu: bool
    precision: str
    timings: dict[str, float] = field(default_factory=dict)
    dropped_rows: int = 0  # rows left with no answer token after truncation (strict mode)
    _tokenized: list[dict[str, list[int]]] | None = None

    @property
    def conversations(self) -> list[dict[str, Any]]:
        """The examples as conversational prompt/completion rows (system + user -> assistant)."""
        return [to_conversation(ex, self.spec.data.system_prompt) for ex in self.examples]

    def tokenized(self) -> list[dict[str, list[int]]]:
        """The examples tokenized once by the harness with the model's tokenizer, uncut."""
        if self._tokenized is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                self.model_path, trust_remote_code=self.spec.model.trust_remote_code
            )
            self._tokenized = [tokenize_conversation(tokenizer, c, None) for c in self.conversations]
        return self._tokenized

    def over_length_rows(self) -> int:
        """Rows longer than train.max_seq_len: each framework (or strict mode) truncates them its way."""
        return sum(len(r["input_ids"]) > self.spec.train.max_seq_len for r in self.tokenized())

    def pretokenized(self) -> list[dict[str, list[int]]]:
        """Strict mode (dataset.tokenize=harness): the harness's ids cut at max_seq_len, rows left without
        an answer token dropped and counted; every framework trains on exactly these. With dataset.fill_to,
        the rows are packed end to end into sequences of exactly that length (memory probes)."""
        if self.spec.data.fill_to:
            return packed(self.tokenized(), self.spec.data.fill_to)
        cut = self.spec.train.max_seq_len
        rows = [{k: v[:cut] for k, v in r.items()} for r in self.tokenized()]
        kept = [r for r in rows if any(r["completion_mask"])]
        self.dropped_rows = len(rows) - len(kept)
        return kept

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


def apply_vram_budget(budget_gb: float | None, on_gpu: bool) -> str | None:
    """Cap this process's CUDA memory so one large GPU can answer for a smaller card; a note when it cannot."""
    if budget_gb is None:
        return None
    if not on_gpu:
        return f"train.vram_budget_gb={budget_gb} ignored: no GPU"
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget_gb * 2**30 / total), 0)
    if budget_gb * 2**30 > total:  # the card is smaller than the budget: say so rather than label it as met
        return f"train.vram_budget_gb={budget_gb} is more than this card's {total / 2**30:.1f} GiB: whole card used"
    return None


def evaluate_run(ctx: RunContext, model, run_dir: Path) -> dict[str, Any]:
    """The trained model's held-out quality (and the base model's, with the adapter disabled, when asked);
    generations go to the run directory. A failing evaluation is recorded without failing the run."""
    spec = ctx.spec
    if model is None or not spec.data.eval_files:
        return {}
    try:
        from transformers import AutoTokenizer

        from bench.evaluate import evaluate

        tokenizer = AutoTokenizer.from_pretrained(ctx.model_path, trust_remote_code=spec.model.trust_remote_code)
        held_out = load_examples(spec.data.eval_files, None, spec.data.on_bad_row)
        conversations = [to_conversation(ex, spec.data.system_prompt) for ex in held_out]
        with ctx.timed("eval_s"):
            out: dict[str, Any] = {}
            out["quality"], generations = evaluate(
                model, tokenizer, conversations, spec.train.max_seq_len, spec.evaluation
            )
            results.write_jsonl(run_dir / results.GENERATIONS, generations)
            if spec.evaluation.base and hasattr(model, "disable_adapter"):
                with model.disable_adapter():  # LoRA off: the base model the sweep started from
                    out["base_quality"], base_gen = evaluate(
                        model, tokenizer, conversations, spec.train.max_seq_len, spec.evaluation
                    )
                results.write_jsonl(run_dir / results.BASE_GENERATIONS, base_gen)
        return out
    except Exception as e:  # quality is measured after the fact; the training result stands
        traceback.print_exc()
        return {"notes": [f"evaluation failed: {type(e).__name__}: {e}"]}


def prepare_model(spec: JobSpec) -> str:
    if spec.model.source == "random":
        from bench.models import ensure_built

        return str(ensure_built(spec.model.path, spec.model.config))
    return spec.model.path


def run(spec: JobSpec, run_dir: Path) -> dict[str, Any]:
    from bench import runners

    runner = runners.load(spec.framework)
    reason = runner.unsupported_reason(spec)
    if reason:
        return {"status": "skipped", "reason": reason, "versions": package_versions()}

    if hasattr(runner, "setup"):
        runner.setup()  # before transformers is imported: some frameworks patch it at import

    import torch

    from bench.callback import StepRecorder

    on_gpu = torch.cuda.is_available()
    precision = resolve_precision(spec.train.precision, on_gpu, on_gpu and torch.cuda.is_bf16_supported())
    events = open(run_dir / results.EVENTS, "a", encoding="utf-8")

    def emit(event: dict[str, Any]) -> None:
        if RANK == 0:  # under torchrun every rank trains; rank 0 speaks for the run
            events.write(json.dumps(event) + "\n")
            events.flush()

    recorder = StepRecorder(emit)
    data_report = DataReport()
    ctx = RunContext(
        spec=spec,
        model_path="",
        examples=load_examples(
            spec.data.train_files, spec.data.max_rows, spec.data.on_bad_row, spec.data.shuffle_seed, data_report
        ),
        callbacks=[recorder],
        on_gpu=on_gpu,
        precision=precision,
    )
    with ctx.timed("model_prepare_s"):
        ctx.model_path = prepare_model(spec)
    budget_note = apply_vram_budget(spec.train.vram_budget_gb, on_gpu)
    runner_start = time.perf_counter()
    try:
        extra = runner.train(ctx)
    finally:
        events.close()
    torch_memory = torch_peak_memory()  # training's peak, before evaluation allocates anything
    if recorder.train_span is not None:
        begin, end = recorder.train_span
        ctx.timings |= {"setup_s": begin - runner_start, "train_s": end - begin}
    quality = evaluate_run(ctx, recorder.model, run_dir) if spec.evaluation.enabled and RANK == 0 else {}
    notes = extra.get("notes", []) + quality.get("notes", []) + ([budget_note] if budget_note else [])
    try:
        over_length = ctx.over_length_rows()
    except Exception as e:  # counted after training; a tokenizer without a chat template cannot say
        over_length = None
        notes.append(f"over-length rows not counted: {type(e).__name__}: {e}")
    return {
        "status": "ok",
        "reason": "",
        "precision": precision,
        "gradient_checkpointing": spec.train.gradient_checkpointing and on_gpu,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "train_examples": len(ctx.examples),
        "tokenize": spec.data.tokenize,
        "data": dataclasses.asdict(data_report) | {"over_length_rows": over_length, "dropped_rows": ctx.dropped_rows},
        "timings": ctx.timings,
        "model_facts": recorder.model_facts,
        "fingerprint": recorder.fingerprint.result(),
        "torch_memory": torch_memory,
        "train_window": recorder.train_window,
        "versions": package_versions(),
        "hardware": hardware(),
        **extra,
        **quality,
        "notes": notes,
    }


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU out-of-memory error, recognised without importing torch (torch.OutOfMemoryError and kin)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return "OutOfMemoryError" in names or "CUDA out of memory" in str(error)


def main(argv: list[str]) -> int:
    spec_path = Path(argv[0])
    spec = JobSpec.load(spec_path)
    run_dir = Path(spec.run_dir)
    start = time.perf_counter()
    try:
        result = run(spec, run_dir)
        code = 0
    except Exception as e:  # recorded for the summary; the parent also keeps the stderr tail
        traceback.print_exc()
        status = "oom" if is_out_of_memory(e) else "failed"
        result = {"status": status, "reason": f"{type(e).__name__}: {e}", "versions": package_versions()}
        code = 1
    result["worker_wall_s"] = time.perf_counter() - start
    if RANK == 0:
        results.write_json_atomic(run_dir / results.WORKER, result)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
