"""`profile.steps=A-B`: a torch.profiler trace of optimizer steps A to B, for digging into one run's steps.

Writes trace.json.gz (Chrome trace format: chrome://tracing or ui.perfetto.dev open it) and trace_ops.txt
(the operators that took the most self time) into the run directory. The traced steps run under the
profiler, so their step times are the profiler's too (the run's notes say so). A trace larger than
MAX_TRACE_BYTES is not kept: the note says how large it was, and the disk is never filled with it.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

MAX_TRACE_BYTES = 512 * 2**20  # the uncompressed trace; a few steps of a 7B model stay well under
TRACE, TRACE_OPS = "trace.json.gz", "trace_ops.txt"


class StepTrace:
    """A harness callback (bench.worker.callback.trainer_callback): the profiler over steps `first` to `last`."""

    def __init__(self, run_dir: Path, first: int, last: int):
        self.run_dir, self.first, self.last = Path(run_dir), first, last
        self.profiler = None
        self.sort = "self_cpu_time_total"  # the top operators by their own time on the device that ran them
        self.note = ""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.first and self.profiler is None:  # step `first` begins
            import torch

            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
                self.sort = "self_cuda_time_total"
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is not None and state.global_step == self.last:
            self.stop()

    def on_train_end(self, args, state, control, **kwargs):
        if self.profiler is not None:  # training ended inside the range
            self.stop()

    def stop(self) -> None:
        profiler, self.profiler = self.profiler, None
        profiler.__exit__(None, None, None)
        table = profiler.key_averages().table(sort_by=self.sort, row_limit=30)
        (self.run_dir / TRACE_OPS).write_text(table, encoding="utf-8")
        raw = self.run_dir / "trace.json"
        profiler.export_chrome_trace(str(raw))
        size = raw.stat().st_size
        steps = f"steps {self.first}-{self.last}"
        if size > MAX_TRACE_BYTES:
            raw.unlink()
            self.note = (f"profile.steps: the trace of {steps} was {size / 2**20:,.0f} MB, over the "
                         f"{MAX_TRACE_BYTES / 2**20:,.0f} MB limit; not kept (trace fewer steps); {TRACE_OPS} written")
            return
        with open(raw, "rb") as src, gzip.open(self.run_dir / TRACE, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.unlink(raw)
        self.note = (f"profile.steps: {steps} ran under torch.profiler (their step times are the profiler's "
                     f"too): {TRACE}, {TRACE_OPS}")
