"""What a run's summary computes (status, metrics from its events and samples, parity with its job's first
run) and the sweep's one-screen table; the summary's fields themselves are bench.core.record's."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.core import flops, measure
from bench.core import metrics as registry
from bench.core.record import Run, Sample, Step, Summary, WorkerResult

STEP1_RTOL = 1e-5  # step-1 loss: the base model's loss on the same first batch
CURVE_RTOL = 1e-3  # loss curve after the first update: bf16 kernels differ by ~1e-4, a changed job by more
CURVE_STEPS = 5  # steps compared after the first one a non-zero learning rate has influenced
PADDING_TOL = 0.01  # two runs of one job whose padding shares differ by more than 1 point did different work


def steady_events(events: list[Step], skip_steps: int) -> list[Step]:
    """The steps after the first `skip_steps` (compilation and allocator warm-up)."""
    return [e for e in events if e.step > skip_steps]


def steady_state(events: list[Step], skip_steps: int, samples_per_step: int) -> dict[str, float]:
    """Throughput over the steady-state steps. `samples_per_step` is per process: a data-parallel step
    feeds that many on every GPU (event.gpus)."""
    steady = steady_events(events, skip_steps)
    seconds = sum(e.step_time_s for e in steady)
    if not steady or seconds <= 0:
        return {}
    tokens_per_s = sum(e.tokens for e in steady) / seconds
    return {
        "steady_steps": len(steady),
        "tokens_per_s": tokens_per_s,  # over all GPUs of a data-parallel run
        "tokens_per_s_per_gpu": tokens_per_s / max(steady[-1].gpus, 1),
        "trainable_tokens_per_s": sum(e.trainable_tokens for e in steady) / seconds,
        "samples_per_s": samples_per_step * sum(e.gpus for e in steady) / seconds,
        "step_time_s_mean": seconds / len(steady),
        **phase_metrics(steady),
    }


def phase_metrics(steady: list[Step]) -> dict[str, float]:
    """The mean time per steady step in each phase (ms), over the steps that measured them."""
    timed = [e.phases for e in steady if e.phases]
    if not timed:
        return {}
    return {f"phase_{p}_ms": 1000 * sum(t.get(p, 0.0) for t in timed) / len(timed) for p in registry.PHASES}


def loss_metrics(events: list[Step]) -> dict[str, Any]:
    losses = [e.loss for e in events if e.loss is not None and math.isfinite(e.loss)]
    if not losses:
        return {}
    return {"steps": len(events), "first_loss": losses[0], "final_loss": losses[-1]}


def layout_metrics(layout: dict[str, Any]) -> dict[str, Any]:
    """The batches' layout over the whole run (train.packing): padding share and sequences per row."""
    if not layout.get("tokens_fed"):
        return {}
    return {"padding_ratio": layout.get("padding_ratio"), "sequences_per_row": layout["sequences"] / layout["rows"]}


def target_metrics(events: list[Step], target: float | None) -> dict[str, Any]:
    """Time and steps until the held-out loss first reached eval.target_loss; absent when it never did
    (the report says "not reached")."""
    if target is None:
        return {}
    for e in events:
        if e.heldout_loss is not None and e.heldout_loss <= target:
            return {"time_to_target_s": e.elapsed_s, "steps_to_target": e.step}
    return {}


def gpu_metrics(
    steady: list[Step], samples: list[Sample], worker: WorkerResult, baseline: list[float] | None
) -> dict[str, Any]:
    """Peak VRAM, energy and MFU of a GPU run; empty on CPU."""
    window = worker.train_window
    if window:  # training's peak: model loading and the evaluation afterwards are not the job being compared
        samples = [s for s in samples if window[0] <= (s.time or 0) <= window[1]] or samples
    vram, vram_method = measure.peak_vram(samples, baseline)
    if vram is None:
        return {}
    m: dict[str, Any] = {
        "peak_vram_mb": vram,  # summed over the run's GPUs
        "peak_vram_mb_per_gpu": measure.peak_vram_per_gpu(samples, baseline),  # what each card must hold
        "vram_method": vram_method,
    }
    if steady:
        # The window opens when the last excluded step ended: the first steady step's start.
        start, end = steady[0].time - steady[0].step_time_s, steady[-1].time
        joules, energy_method = measure.energy_j(samples, start, end)
        tokens = sum(e.tokens for e in steady)
        if joules is not None and tokens:
            m |= {
                "energy_j_steady": joules,
                "energy_method": energy_method,
                "energy_j_per_1k_tokens": 1000 * joules / tokens,
            }
        m["gpu_util_pct_mean"] = measure.mean_gpu_util_pct(samples, start, end)
        gpus = worker.hardware.gpus if worker.hardware else []
        peak = flops.peak_bf16_flops(gpus[0].name) if gpus else None
        if peak and worker.model_facts:
            m |= flops.mfu(steady, worker.model_facts, bool(worker.gradient_checkpointing), peak) | {
                "peak_tflops": peak / 1e12
            }
    return m


def metrics(
    events: list[Step],
    samples: list[Sample],
    worker: WorkerResult,
    outcome,
    skip_steps: int,
    samples_per_step: int,
    target_loss: float | None = None,
) -> dict[str, Any]:
    """The run's registered metrics, from its events and samples (read once by the caller) and the worker's
    report (an empty one when the worker never wrote it)."""
    steady = steady_events(events, skip_steps)
    m: dict[str, Any] = {
        "wall_s": outcome.wall_s,
        **worker.timings,
        **steady_state(events, skip_steps, samples_per_step),
        **loss_metrics(events),
        "tokens": sum(e.tokens for e in events),
        "trainable_tokens": sum(e.trainable_tokens for e in events),
        **layout_metrics(worker.layout),
        **target_metrics(events, target_loss),
        "peak_rss_mb": measure.peak_rss_mb(samples),
        **gpu_metrics(steady, samples, worker, outcome.sampler.baseline_used_mb),
        **worker.torch_memory,
        **host_load(samples, worker.train_window),
        **sampler_cost(samples, worker.train_window, outcome.sampler),
    }
    return registry.declared({k: v for k, v in m.items() if v is not None})


SHARED_CPU_CORES = 0.10  # other processes took more than 10 % of one core over training: the machine was shared


def _bracket(samples: list[Sample], start: float, end: float) -> list[Sample]:
    """The samples spanning [start, end]: the last one at or before start through the first at or after end
    (a short window still gets two samples to difference)."""
    timed = [s for s in samples if s.host_busy_s is not None]
    first = max((i for i, s in enumerate(timed) if s.time <= start), default=0)
    last = min((i for i, s in enumerate(timed) if s.time >= end), default=len(timed) - 1)
    return timed[first : last + 1]


def host_load(samples: list[Sample], window: list[float] | tuple[float, float] | None) -> dict[str, Any]:
    """The host's load over the training window: mean 1-minute load average, the cores other processes kept
    busy on average (machine busy CPU seconds less the worker tree's and the harness's, per second), and on
    GPUs how many other processes computed on the run's devices. Empty without two samples to compare."""
    if not window:
        return {}
    span = _bracket(samples, window[0], window[1])
    if len(span) < 2 or span[-1].time <= span[0].time:
        return {}
    a, b = span[0], span[-1]
    others_s = (b.host_busy_s - a.host_busy_s) - (b.tree_cpu_s - a.tree_cpu_s)
    others_s -= (b.harness_cpu_s or 0.0) - (a.harness_cpu_s or 0.0)
    out: dict[str, Any] = {
        "load_avg_1m": sum(s.load1 for s in span) / len(span),
        "other_cpu_cores": max(0.0, others_s) / (b.time - a.time),
    }
    gpu_rows = [g for s in span for g in (s.gpus or []) if g.other_pids is not None]
    if gpu_rows:
        out["gpu_other_processes"] = len({pid for g in gpu_rows for pid in g.other_pids})
    return out


def sampler_cost(samples: list[Sample], window: list[float] | tuple[float, float] | None, stats) -> dict:
    """What the sampler itself cost (bench/sweep/sampler.py): its CPU time per sample over the run, and its CPU seconds
    per second of the training window, as % of one core (samples without its counter, recorded before it
    had one, give no such figure)."""
    out: dict[str, Any] = {"sampler_samples": stats.samples, "sampler_cpu_s": stats.sampler_cpu_s}
    if stats.samples:
        out["sampler_tick_ms"] = 1000 * stats.sampler_cpu_s / stats.samples
    span = [s for s in _bracket(samples, window[0], window[1]) if s.sampler_cpu_s is not None] if window else []
    if len(span) >= 2 and span[-1].time > span[0].time:
        a, b = span[0], span[-1]
        out["sampler_cpu_pct"] = 100 * (b.sampler_cpu_s - a.sampler_cpu_s) / (b.time - a.time)
    return out


def shared_machine(metrics: dict[str, Any]) -> str | None:
    """Why a run's speed cannot be taken at face value (other work on its machine while it trained), or None."""
    why = []
    cores = metrics.get("other_cpu_cores")
    if cores is not None and cores > SHARED_CPU_CORES:
        why.append(f"other processes used {cores:.2f} cores (load average {metrics.get('load_avg_1m', 0):.1f})")
    if metrics.get("gpu_other_processes"):
        why.append(f"{metrics['gpu_other_processes']} other process(es) computed on its GPU")
    return "shared its machine while training: " + "; ".join(why) if why else None


def torch_build(summary: Summary) -> str | None:
    """The torch a run trained with: its version (a local tag such as +cpu included) and CUDA build."""
    version = summary.versions.get("torch")
    if not version:
        return None
    cuda = summary.hardware.cuda if summary.hardware else None
    return f"{version} cuda {cuda}" if cuda else f"{version} cpu-only"


def torch_build_mismatches(runs: list[tuple[str | None, str, str | None]]) -> list[str]:
    """One line per job key whose runs (job key, run, torch build) trained on different torch builds: their
    speed differences are partly torch's, not only the frameworks'."""
    builds: dict[str, dict[str, list[str]]] = {}
    for job_key, run, build in runs:
        if job_key and isinstance(build, str) and build:  # a run that never reported one (skipped) has NaN
            builds.setdefault(job_key, {}).setdefault(build, []).append(str(run))
    return [
        f"job {key[:8]} ran on different torch builds: " + "; ".join(f"{b} ({', '.join(r)})" for b, r in found.items())
        for key, found in builds.items()
        if len(found) > 1
    ]


def time_cells(m: dict[str, Any]) -> tuple[str, str]:
    """Where a run's time went, for the sweep table: the run's own phases (model load, training, evaluation)
    and the one-time costs paid before it started (environment build or check, model build), kept apart."""
    run = " ".join(f"{label} {m[k]:.1f}" for label, k in (("load", "model_load_s"), ("train", "train_s"),
                                                          ("eval", "eval_s")) if m.get(k) is not None)  # fmt: skip
    once = []
    if m.get("env_build_s") is not None:
        once.append(f"env build {m['env_build_s']:.0f}")
    elif m.get("env_check_s") is not None:
        once.append(f"env check {m['env_check_s']:.1f}")
    if m.get("data_prepare_s") is not None and m["data_prepare_s"] >= 0.05:
        once.append(f"data {m['data_prepare_s']:.1f}")
    if m.get("model_build_s") is not None:
        once.append(f"model build {m['model_build_s']:.0f}")
    elif m.get("model_wait_s") is not None:
        once.append(f"waited for model build {m['model_wait_s']:.0f}")
    return run or "-", " ".join(once) or "-"


def memory_limit_mb(pid: int | str = "self", proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")):
    """The memory limit a process runs under, from its own cgroup and the ones above it (the smallest wins),
    cgroup v2 or v1; None when no cgroup sets one."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            base, name = cgroup, "memory.max"
        elif "memory" in controllers.split(","):  # v1: the memory controller's own hierarchy
            base, name = cgroup / "memory", "memory.limit_in_bytes"
        else:
            continue
        node = base / path.lstrip("/")
        while True:
            limits += [v for v in [_limit_bytes(node / name)] if v is not None]
            if node == base or base not in node.parents:
                break
            node = node.parent
    return min(limits) / 2**20 if limits else None


def _limit_bytes(path: Path) -> int | None:
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() and int(raw) < 1 << 60 else None  # v1 says "no limit" huge, v2 "max"


def killed_hint(reason: str, peak_rss_mb: float | None, limit_mb: float | None) -> str:
    """A SIGKILL the parent did not send is most often the kernel's OOM killer: say so when a limit is known."""
    if "killed by signal 9" not in reason or limit_mb is None:
        return reason
    peak = "-" if peak_rss_mb is None else f"{peak_rss_mb:,.0f}"
    return f"{reason}; likely out of memory (peak RSS {peak} MB, limit {limit_mb:,.0f} MB)"


def status_of(worker: WorkerResult | None, outcome) -> tuple[str, str]:
    """The run's status and reason, trusting the parent's view over the worker's when they disagree."""
    if outcome.interrupted:
        return "interrupted", f"interrupted ({outcome.interrupted}); worker process tree stopped"
    if outcome.timed_out:
        return "timeout", f"exceeded timeout_s after {outcome.wall_s:.0f} s; worker process tree killed"
    if worker is None:
        rc = outcome.returncode
        how = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with code {rc}"
        return "failed", f"worker {how} without reporting a result"
    return worker.status, worker.reason


def diverged(events: list[Step]) -> str | None:
    """Why a run that finished did not train, from its steps: a loss or gradient norm that turned NaN or
    infinite, or a loss and gradient norm both exactly 0 (nothing left to learn is not a benchmark result)."""
    for e in events:
        loss, grad = e.loss, e.grad_norm
        values = {"loss": loss, "gradient norm": grad}
        if bad := [f"{name} {v}" for name, v in values.items() if v is not None and not math.isfinite(v)]:
            return f"training diverged at step {e.step}: {', '.join(bad)}"
        if loss == 0 and grad == 0:
            return f"training stopped at step {e.step}: loss and gradient norm exactly 0"
    return None


def final_status(worker: WorkerResult | None, outcome, events: list[Step]) -> tuple[str, str]:
    """status_of, and `diverged` for a run that finished ok on steps that did not train (diverged())."""
    status, reason = status_of(worker, outcome)
    if status == "ok" and (why := diverged(events)):
        return "diverged", why
    return status, reason


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def same_job(summary: Summary) -> tuple[Any, ...]:
    """Runs with equal values here trained the same job from the same seed: what parity compares. A summary
    without a job key (an older harness) matches nothing but itself."""
    return (summary.job_key or f"?{summary.run}", summary.seed)


def curve_window(events: list[Step], k: int = CURVE_STEPS) -> list[int]:
    """Steps whose loss reflects at least one update with a non-zero learning rate: the k after the first
    step that trained at lr > 0. Step 1's loss is the base model's (LoRA B starts at zero), so it cannot
    tell LoRA initialisations apart, and linear warmup trains step 1 at lr 0."""
    first = next((e.step for e in events if (e.lr or 0) > 0), None)
    return [] if first is None else [e.step for e in events if first < e.step <= first + k]


def curve_rel_diff(events: list[Step], ref: list[Step]) -> tuple[float | None, list[int]]:
    """Largest relative loss difference over the curve window (see curve_window), and the steps compared."""
    ref_loss = {e.step: e.loss for e in ref}
    steps = [s for s in curve_window(ref) if ref_loss.get(s)]
    loss = {e.step: e.loss for e in events}
    diffs = [abs(loss[s] - ref_loss[s]) / abs(ref_loss[s]) for s in steps if loss.get(s) is not None]
    return (max(diffs) if diffs else None), steps


def parity(runs: list[Run]) -> list[dict]:
    """For each finished run, against the first finished run of the same job and seed (the reference):
    whether it trained on the same tokens, started from the same loss, and followed the same loss curve."""
    reference: dict[tuple[Any, ...], Run] = {}
    out = []
    for run in runs:
        s = run.summary
        ref = reference.setdefault(same_job(s), run) if s.status == "ok" else None
        if ref is None:
            out.append({})
            continue
        fp, ref_fp = s.fingerprint, ref.summary.fingerprint
        m, ref_m = s.metrics, ref.summary.metrics
        loss, ref_loss = m.get("first_loss"), ref_m.get("first_loss")
        rel = abs(loss - ref_loss) / abs(ref_loss) if loss is not None and ref_loss else None
        curve, steps = curve_rel_diff(run.events, ref.events)
        pad, ref_pad = m.get("padding_ratio"), ref_m.get("padding_ratio")
        pad_diff = abs(pad - ref_pad) if pad is not None and ref_pad is not None else None
        out.append(
            {
                "reference": ref.name,
                "same_tokens": bool(fp.first_batches_sha256)
                and (fp.first_batches_sha256, fp.examples, fp.dataset_tokens, fp.dataset_trainable_tokens)
                == (ref_fp.first_batches_sha256, ref_fp.examples, ref_fp.dataset_tokens,
                    ref_fp.dataset_trainable_tokens),  # fmt: skip
                "step1_loss_rel_diff": rel,
                "same_start": rel is not None and rel <= STEP1_RTOL,
                "curve_loss_rel_diff": curve,
                "curve_steps": f"{steps[0]}-{steps[-1]}" if steps else None,
                "same_curve": curve is not None and curve <= CURVE_RTOL,
                "padding_diff": pad_diff,
                "same_padding": pad_diff is None or pad_diff <= PADDING_TOL,
            }
        )
    return out


def varying_overrides(summaries: list[Summary]) -> list[list[str]]:
    """Each run's overrides, less those every run of the sweep shares and the framework's name (it has its
    own column): what tells the runs apart."""
    shared = set.intersection(*(set(s.overrides or []) for s in summaries)) if summaries else set()
    return [[o for o in s.overrides or [] if o not in shared and not o.startswith("framework=")] for s in summaries]


COLUMNS = [  # (name, justify, min width): fit for a 160-column log; samples/s is in the report
    ("run", "left", None),
    ("framework", "left", None),
    ("job", "left", None),
    ("status", "left", None),
    ("tok/s", "right", None),
    ("peak RSS MB", "right", None),
    ("peak VRAM MB", "right", None),  # only where a run had a GPU
    ("loss first→final", "right", None),
    ("data fingerprint", "left", 19),  # its flags (≠ tokens, step-1 loss Δ) must stay readable
    ("wall s", "right", None),
    ("time s", "left", None),  # the run's phases; after "once:", what was paid before it (not in wall s)
]
STYLES = {"ok": "green", "skipped": "yellow"}


def sweep_table(runs: list[Run], title: str = "") -> Table:
    """One row per run: status, throughput, peak memory, loss and wall time, fit for one screen."""
    table = Table(title=title, title_justify="left")
    summaries = [r.summary for r in runs]
    gpu = any(s.metrics.get("peak_vram_mb") is not None for s in summaries)
    for col, justify, width in COLUMNS:
        if gpu or col != "peak VRAM MB":
            table.add_column(col, justify=justify, overflow="fold", min_width=width)
    for s, varying, par in zip(summaries, varying_overrides(summaries), parity(runs), strict=True):
        m = s.metrics
        loss = f"{m['first_loss']:.3f}→{m['final_loss']:.3f}" if "final_loss" in m else "-"
        table.add_row(
            " ".join([s.run, *varying]),
            f"{s.name} {s.framework_version or ''}",
            (s.job_key or "-")[:8],
            f"[{STYLES.get(s.status, 'red')}]{s.status}[/]",
            _fmt(m.get("tokens_per_s"), ",.0f") + (" [yellow]shared[/]" if shared_machine(m) else ""),
            _fmt(m.get("peak_rss_mb"), ",.0f"),
            *([_fmt(m.get("peak_vram_mb"), ",.0f")] if gpu else []),
            loss,
            _parity_cell(s, par),
            _fmt(m.get("wall_s"), ".1f"),
            "; once: ".join(c for c in time_cells(m) if c != "-") or "-",
        )
    notes = [f"{s.run} {s.status}: {s.reason}" for s in summaries if s.reason]
    notes += [f"[yellow]{s.run} {why}[/]" for s in summaries if (why := shared_machine(s.metrics))]
    notes += [f"[yellow]{line}[/]" for line in torch_build_mismatches([(s.job_key, s.run, torch_build(s))
                                                                       for s in summaries])]  # fmt: skip
    table.caption = "\n".join(notes) or None
    table.caption_justify = "left"
    return table


def _parity_cell(summary: Summary, par: dict[str, Any]) -> str:
    """Short fingerprint, and against the job's reference run: same tokens (=) or not (≠), and the
    step-1 loss difference when it exceeds the tolerance."""
    sha = summary.fingerprint.first_batches_sha256[:8]
    if summary.effective.tokenize == "harness":
        sha += " strict"  # tokenized once by the harness
    if summary.fingerprint.packing != "none":
        sha += f" {summary.fingerprint.packing}"  # the batch layout is part of what was trained on
    if not par:
        return sha or "-"
    if par["reference"] == summary.run:
        return f"{sha} ref"
    cell = f"{sha} =" if par["same_tokens"] else f"[red]{sha} ≠ tokens[/]"
    if not par["same_start"] and par["step1_loss_rel_diff"] is not None:
        cell += f" [red]step-1 loss Δ{par['step1_loss_rel_diff']:.1e}[/]"
    if not par["same_curve"] and par["curve_loss_rel_diff"] is not None:
        cell += f" [red]loss steps {par['curve_steps']} Δ{par['curve_loss_rel_diff']:.1e}[/]"
    if not par["same_padding"]:
        cell += f" [red]padding Δ{100 * par['padding_diff']:.1f} pts[/]"
    return cell
