"""Start the worker in its framework's environment, sample it, show its progress, enforce the timeout."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.progress import Progress

from bench.analysis.assess import memory_limit_mb
from bench.core import record, results
from bench.core.paths import PACKAGE_DIR, PARENT_PID
from bench.sweep.sampler import Sampler, SamplerStats

GRACE_S = 5.0  # between SIGTERM and SIGKILL when a worker must go
POLL_S = 0.2


@dataclass
class Outcome:
    returncode: int | None
    timed_out: bool
    interrupted: str  # what stopped the run (Ctrl-C, SIGTERM, SIGHUP); empty when nothing did
    wall_s: float
    sampler: SamplerStats
    log_tail: str
    memory_limit_mb: float | None = None  # the worker's cgroup limit, read while it ran (an OOM kill's context)


def worker_pythonpath(cache_dir: Path) -> Path:
    """A directory holding only a link to this package, for the worker's PYTHONPATH.

    Putting the package's parent there instead could leak the parent environment's site-packages
    into the framework's environment when the harness is installed non-editable. One directory per
    checkout (keyed by its path): two checkouts sharing a cache never import each other's code.
    """
    link_dir = cache_dir / "worker-path" / hashlib.sha256(str(PACKAGE_DIR).encode()).hexdigest()[:16]
    link = link_dir / "bench"
    link_dir.mkdir(parents=True, exist_ok=True)
    if not (link.is_symlink() and link.resolve() == PACKAGE_DIR):
        tmp = link_dir / f".bench.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(PACKAGE_DIR, target_is_directory=True)
        os.replace(tmp, link)
    return link_dir


def worker_env(pythonpath: Path, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
    )
    env.update({k: str(v) for k, v in extra.items() if v not in (None, "")})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath), env.get("PYTHONPATH", "")) if p)
    return env


def pin_gpus(env: dict[str, str], num_gpus: int) -> list[str]:
    """Pin the run to its GPUs in the worker's environment; they are the ones the sampler watches.

    The first `num_gpus` of CUDA_VISIBLE_DEVICES (of 0, 1, ... when unset). PCI bus order makes CUDA's
    numbering NVML's, so an index means the same card to the worker and the sampler.
    """
    visible = env.get("CUDA_VISIBLE_DEVICES")
    ids = [str(i) for i in range(num_gpus)] if visible is None else [d.strip() for d in visible.split(",") if d.strip()]
    chosen = ids[:num_gpus]  # num_gpus >= 1: the spec says so
    env["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return chosen


def kill_tree(proc: subprocess.Popen) -> None:
    """Stop the worker and everything it started (its own process group, plus any stragglers)."""
    stragglers: list[psutil.Process] = []
    with contextlib.suppress(psutil.NoSuchProcess):
        stragglers = psutil.Process(proc.pid).children(recursive=True)
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    for p in stragglers:  # children that left the process group
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    with open(path, encoding="utf-8", errors="replace") as fh:
        return "".join(deque(fh, maxlen=lines))


def worker_command(python: Path, spec_path: Path, num_gpus: int = 1) -> list[str]:
    """The worker's command line: one process, or one per GPU under torchrun for data parallelism."""
    worker = ["-m", "bench.worker", str(spec_path)]
    if num_gpus <= 1:
        return [str(python), *worker]
    return [str(python), "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_gpus}", *worker]


def launch(
    python: Path,
    run_dir: Path,
    env: dict[str, str],
    timeout_s: float,
    sampler_cfg: Any,
    max_steps: int,
    progress: Progress | None = None,
    num_gpus: int = 1,
    lock_fd: int | None = None,
) -> Outcome:
    """Run `python -m bench.worker spec.json` in `run_dir` and watch it until it ends. `lock_fd`: the run
    directory's lock (results.run_lock), handed to the worker so it holds the directory as long as it lives."""
    log_path = run_dir / results.WORKER_LOG
    events_path = run_dir / results.EVENTS
    env = dict(env) | {PARENT_PID: str(os.getpid())}  # the worker stops itself if this process disappears
    devices = pin_gpus(env, num_gpus)
    sampler = Sampler(run_dir / results.SAMPLES, sampler_cfg.interval_s, sampler_cfg.gpu, devices)  # reads idle VRAM
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            worker_command(python, run_dir / results.SPEC, num_gpus),
            cwd=run_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one signal reaches the whole tree
            pass_fds=() if lock_fd is None else (lock_fd,),
        )
    sampler.attach(proc.pid)
    limit_mb = memory_limit_mb(proc.pid)
    task = progress.add_task("starting", total=max_steps) if progress else None
    steps = StepTail(events_path)
    timed_out, interrupted = False, ""
    try:
        while proc.poll() is None:
            if time.perf_counter() - start > timeout_s:
                timed_out = True
                kill_tree(proc)
                break
            if progress is not None:
                _show_steps(progress, task, steps)
            time.sleep(POLL_S)
    except KeyboardInterrupt as e:
        interrupted = interrupt_cause(e)
        kill_tree(proc)
    finally:
        kill_tree(proc)  # whatever the worker left behind in its process group (compile workers, ...)
        stats = sampler.stop()
        if progress is not None:
            _show_steps(progress, task, steps)
            progress.remove_task(task)
    # The worker scrubs its own output; this catches what reached the log around it (torchrun's launcher).
    # On a full disk the log stays as the worker wrote it.
    if log_path.exists():
        with contextlib.suppress(results.DiskFull):
            results.write_text_atomic(log_path, log_path.read_text(encoding="utf-8", errors="replace"))
    wall_s = time.perf_counter() - start
    return Outcome(proc.returncode, timed_out, interrupted, wall_s, stats, _tail(log_path), limit_mb)


class Interrupted(KeyboardInterrupt):
    """A signal that stops a run as Ctrl-C does, naming itself."""


SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP: the terminal hung up"}


def _interrupt(signum, frame):
    raise Interrupted(SIGNALS[signum])


def interrupt_cause(error: KeyboardInterrupt) -> str:
    """What stopped the run, in words: the signal's name, or Ctrl-C (Python's own KeyboardInterrupt)."""
    return str(error) if isinstance(error, Interrupted) else "Ctrl-C"


@contextlib.contextmanager
def interruptible():
    """SIGTERM and SIGHUP (a terminal hung up) interrupt like Ctrl-C while a run builds or trains, so the run
    is stopped, recorded as interrupted, and takes its worker or build down with it."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StepTail:
    """The newest event of a growing events file, read incrementally."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.last: record.Step | None = None

    def poll(self) -> record.Step | None:
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                fh.seek(self.offset)
                for line in fh:
                    if not line.endswith("\n"):
                        break  # the worker is still writing this line
                    self.offset += len(line.encode("utf-8"))
                    with contextlib.suppress(record.RecordError):  # the display skips it; the summary names it
                        self.last = record.from_line(line, record.Step, self.path, "a step")
        return self.last


def _show_steps(progress: Progress, task, steps: StepTail) -> None:
    last = steps.poll()
    if last is None:
        return
    tps = last.tokens / last.step_time_s if last.step_time_s else 0.0
    loss = f"{last.loss:.4f}" if last.loss is not None else "-"
    progress.update(task, completed=last.step, description=f"step {last.step} loss {loss} {tps:,.0f} tok/s")
