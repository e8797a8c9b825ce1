"""Runs one job inside a framework's environment: `python -m bench.worker RUN_DIR/spec.json`.

Writes `events.jsonl` (one line per optimizer step, flushed as it goes) and `worker.json` (status, reason,
timings, torch peak memory, package versions, hardware). The parent turns those into the run's summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.core import results
from bench.core.data import Example, LoadCounts, load_examples
from bench.core.paths import PARENT_PID
from bench.core.record import (
    DataCounts,
    Fingerprint,
    Gpu,
    Hardware,
    Step,
    WorkerResult,
    to_dict,
    write_line,
    write_worker,
)
from bench.core.spec import STACK, JobSpec, resolve_precision
from bench.worker.runners.base import RunContext

RANK = int(os.environ.get("RANK", "0"))  # set by torchrun for data-parallel runs (train.num_gpus > 1)


def package_versions(framework_packages: tuple[str, ...] = ()) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in dict.fromkeys((*framework_packages, *STACK)):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def hardware() -> Hardware:
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(Gpu(p.name, p.total_memory / 2**20, f"{p.major}.{p.minor}"))
    return Hardware(platform.platform(), platform.processor() or platform.machine(), os.cpu_count(),
                    torch.get_num_threads(), torch.version.cuda, gpus)  # fmt: skip


def torch_peak_memory() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {
        "torch_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
        "torch_max_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
    }


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


def heldout_rows(spec: JobSpec) -> list[Example]:
    return load_examples([spec.dataset.eval_file])


def evaluate_run(ctx: RunContext, model, run_dir: Path) -> dict[str, Any]:
    """The trained model's held-out quality (and the base model's, with the adapter disabled, when asked);
    generations go to the run directory. A failing evaluation is recorded without failing the run."""
    spec = ctx.spec
    if model is None or not spec.dataset.eval_file:
        return {}
    try:
        from transformers import AutoTokenizer

        from bench.worker.evaluate import evaluate

        tokenizer = AutoTokenizer.from_pretrained(ctx.model_path, trust_remote_code=spec.model.trust_remote_code)
        examples = heldout_rows(spec)
        with ctx.timed("eval_s"):
            out: dict[str, Any] = {}
            out["quality"], generations = evaluate(
                model, tokenizer, examples, spec.dataset, spec.train.max_seq_len, spec.eval
            )
            results.write_jsonl(run_dir / results.GENERATIONS, map(to_dict, generations))
            if spec.eval.base and hasattr(model, "disable_adapter"):
                with model.disable_adapter():  # LoRA off: the base model the sweep started from
                    out["base_quality"], base_gen = evaluate(
                        model, tokenizer, examples, spec.dataset, spec.train.max_seq_len, spec.eval
                    )
                results.write_jsonl(run_dir / results.BASE_GENERATIONS, map(to_dict, base_gen))
        return out
    except Exception as e:  # quality is measured after the fact; the training result stands
        traceback.print_exc()
        return {"notes": [f"evaluation failed: {type(e).__name__}: {e}"]}


def heldout_loss_fn(ctx: RunContext):
    """For eval.every_steps: the held-out answer loss as a function of the model, its rows tokenized now,
    before training, so that nothing but the forward passes happens on the way."""
    from transformers import AutoTokenizer

    from bench.core.data import tokenize_example
    from bench.worker.evaluate import answer_loss

    spec = ctx.spec
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_path, trust_remote_code=spec.model.trust_remote_code)
    rows = [tokenize_example(tokenizer, ex, spec.dataset, spec.train.max_seq_len) for ex in heldout_rows(spec)]
    rows = [r for r in rows if any(r["completion_mask"])]  # as evaluate() does: rows that keep answer tokens

    def loss(model) -> float:
        was_training = model.training
        model.eval()
        try:
            return answer_loss(model, rows, tokenizer.pad_token_id, spec.eval.batch_size)[0]
        finally:
            model.train(was_training)

    return loss


def check_first_loss(first_loss: float | None) -> str | None:
    """A step-1 loss of zero or NaN means the model learned nothing real from that batch (a masking or
    packing bug: every label ignored, attention broken): the run failed, whatever the framework says."""
    if first_loss is None:
        return None
    if math.isnan(first_loss) or math.isinf(first_loss):
        return f"step-1 loss is {first_loss}: the model did not train on real tokens (labels or attention broken)"
    if first_loss == 0:
        return "step-1 loss is 0: no token contributed to the loss (labels masked or packing broke the batch)"
    return None


def check_layout(spec: JobSpec, layout: dict[str, int]) -> str | None:
    """The batch layout the model really got against train.packing: a framework that packs on its own, or
    ignores a packing request, changes the job (it is never left implicit)."""
    rows, seqs = layout.get("rows", 0), layout.get("sequences", 0)
    if not rows:
        return None
    if spec.train.packing == "none" and seqs > rows:
        return f"train.packing=none, but the model was fed {seqs} sequences in {rows} rows: the framework packed them"
    if spec.train.packing != "none" and seqs == rows and spec.train.batch_size > 1:
        return f"train.packing={spec.train.packing}, but every row the model was fed held one sequence: not packed"
    return None


def prepare_model(spec: JobSpec) -> str:
    if spec.model.source == "random":
        from bench.core.models import ensure_built

        return str(ensure_built(spec.model.path, spec.model.config))
    return spec.model.path


def train_job(spec: JobSpec, run_dir: Path) -> WorkerResult:
    from bench.worker import runners

    runner = runners.load(spec.runner)
    reason = runner.unsupported_reason(spec)
    if reason:
        return WorkerResult("skipped", reason, versions=package_versions(spec.packages))

    if hasattr(runner, "setup"):  # optional in the contract
        runner.setup()  # before transformers is imported: some frameworks patch it at import

    import torch

    from bench.worker.callback import StepRecorder
    from bench.worker.trace import StepTrace

    on_gpu = torch.cuda.is_available()
    precision = resolve_precision(spec.train.precision, on_gpu, on_gpu and torch.cuda.is_bf16_supported())
    events = open(run_dir / results.EVENTS, "a", encoding="utf-8")

    def emit(step: Step) -> None:
        if RANK == 0:  # under torchrun every rank trains; rank 0 speaks for the run
            write_line(events, step)

    recorder = StepRecorder(emit, every_steps=spec.eval.every_steps, phases=spec.profile.phases)
    data_report = LoadCounts()  # of the selection, in its order: the parent chose the rows (bench.sweep.selection)
    rows = load_examples([spec.dataset.train_file], report=data_report)
    trace = StepTrace(run_dir, *spec.profile.step_range()) if spec.profile.steps and RANK == 0 else None
    callbacks = [recorder, *([trace] if trace else [])]
    ctx = RunContext(spec=spec, model_path="", examples=rows, callbacks=callbacks, on_gpu=on_gpu, precision=precision)
    with ctx.timed("model_prepare_s"):
        ctx.model_path = prepare_model(spec)
    ctx.check_usable()
    if spec.eval.every_steps and spec.dataset.eval_file:
        recorder.heldout = heldout_loss_fn(ctx)
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
        if recorder.eval_s:  # held-out evaluations inside that span (eval.every_steps), off the steps' clock
            ctx.timings["train_eval_s"] = recorder.eval_s
    quality = evaluate_run(ctx, recorder.model, run_dir) if spec.eval.enabled and RANK == 0 else {}
    not_applied = [f"train.{name} is not applied by {spec.framework}" for name in sorted(runner.NOT_APPLIED)]
    notes = not_applied + extra.get("notes", []) + quality.get("notes", []) + ([budget_note] if budget_note else [])
    notes += [trace.note] if trace and trace.note else []
    report = trained(ctx, recorder, data_report, notes)
    report.torch_memory, report.trainable_params = torch_memory, extra.get("trainable_params")
    report.quality, report.base_quality = quality.get("quality", {}), quality.get("base_quality", {})
    return report


def trained(ctx: RunContext, recorder, data_report: LoadCounts, notes: list[str]) -> WorkerResult:
    """The report of a run that trained: what it trained on (rows, tokens, batch layout), how, and whether its
    first loss and layout make it a valid run."""
    spec = ctx.spec
    try:
        over_length = ctx.over_length_rows()
    except Exception as e:  # counted after training; a tokenizer without a chat template cannot say
        over_length = None
        notes.append(f"over-length rows not counted: {type(e).__name__}: {e}")
    fingerprint = recorder.fingerprint.result() | {"packing": spec.train.packing}
    layout = recorder.layout
    # Share of the token slots fed to the model that were padding.
    padding = 1 - layout["tokens"] / layout["tokens_fed"] if layout["tokens_fed"] else None
    failure = check_first_loss(recorder.first_loss) or check_layout(spec, layout)
    # What the framework trained on: the dataset it built, which may be smaller than the rows handed over
    # (TRL drops rows that truncation leaves without an answer token).
    train_examples = fingerprint.get("examples", len(ctx.examples))
    dropped = 0 if spec.dataset.fill_to else max(0, len(ctx.examples) - train_examples)  # fill_to: packed rows
    return WorkerResult(
        status="failed" if failure else "ok",
        reason=failure or "",
        precision=ctx.precision,
        gradient_checkpointing=spec.train.gradient_checkpointing and ctx.on_gpu,
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        train_examples=train_examples,
        tokenize=spec.dataset.tokenize,
        data=DataCounts(**dataclasses.asdict(data_report), over_length_rows=over_length, dropped_rows=dropped),
        timings=ctx.timings,
        model_facts=recorder.model_facts,
        fingerprint=Fingerprint(**fingerprint),
        layout=layout | {"padding_ratio": padding},
        train_window=recorder.train_window,
        versions=package_versions(spec.packages),
        hardware=hardware(),
        notes=notes,
    )


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU out-of-memory error, recognised without importing torch (torch.OutOfMemoryError and kin)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return "OutOfMemoryError" in names or "CUDA out of memory" in str(error)


def die_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Stop this worker's whole process group once the harness that started it is gone (killed with SIGKILL,
    say, when it had no chance to stop us): a benchmark never goes on training unwatched."""
    import signal
    import threading

    def watch() -> None:
        while True:
            try:
                os.kill(parent_pid, 0)
            except (ProcessLookupError, PermissionError):  # gone (PermissionError: its pid now someone else's)
                os.killpg(os.getpgrp(), signal.SIGKILL)  # the worker's group: torchrun ranks and children too
            time.sleep(interval_s)

    threading.Thread(target=watch, daemon=True, name="sftbench-parent-watch").start()


def scrub_output():
    """Route this process's stdout and stderr (file descriptors 1 and 2, so frameworks, C libraries and
    child processes too) through a pipe that is redacted line by line before it reaches worker.log: a
    secret never lands in the file, even when the parent dies before it could rewrite the log."""
    import threading

    read_fd, write_fd = os.pipe()
    log = os.fdopen(os.dup(1), "wb", buffering=0)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)

    forms = results.secret_forms(os.environ)  # once: the worker's environment does not change under it

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as lines:
            for line in lines:
                with contextlib.suppress(OSError):  # a full disk: keep draining, so no writer ever blocks
                    log.write(results.scrub(line.decode("utf-8", "replace"), forms).encode("utf-8"))

    thread = threading.Thread(target=pump, daemon=True, name="sftbench-scrub")
    thread.start()

    def close() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.close(1)
        os.close(2)
        thread.join(timeout=5)  # children that still hold the pipe must not keep the worker alive

    return close


def main(argv: list[str]) -> int:
    if os.environ.get(PARENT_PID):
        die_with_parent(int(os.environ[PARENT_PID]))
    close_output = scrub_output()
    try:
        return run_main(argv)
    finally:
        close_output()


def run_main(argv: list[str]) -> int:
    spec_path = Path(argv[0])
    spec = JobSpec.load(spec_path)
    run_dir = Path(spec.run_dir)
    start = time.perf_counter()
    try:
        result = train_job(spec, run_dir)
        code = 0
    except Exception as e:  # recorded for the summary; the parent also keeps the stderr tail
        traceback.print_exc()
        status = "oom" if is_out_of_memory(e) else "failed"
        result = WorkerResult(status, f"{type(e).__name__}: {e}", versions=package_versions(spec.packages))
        code = 1
    result.worker_wall_s = time.perf_counter() - start
    if RANK == 0:
        write_worker(run_dir, result)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
