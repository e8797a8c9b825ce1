"""Resource metrics from the recorded samples of a run: peak memory, energy, which method produced each.

Pure functions over `samples.jsonl` rows (see bench/sweep/sampler.py), so they are tested on recorded data.
"""

from __future__ import annotations

from bench.core.record import Sample


def peak_rss_mb(samples: list[Sample]) -> float | None:
    return max((s.rss_mb for s in samples), default=None)


def vram_per_gpu(
    samples: list[Sample], baseline_used_mb: list[float] | None
) -> tuple[list[list[float]], str | None]:
    """The worker tree's VRAM on each of the run's GPUs, per sample, and how it was measured.

    `nvml_process`: NVML's per-process figures for the tree. Where the driver gives none (containers without
    the host PID namespace), `device_minus_baseline`: device-used memory minus what was used before the worker
    started, which also counts any other process that allocated meanwhile; `device_used` where no baseline
    was read, so nothing was subtracted.
    """
    gpu_rows = [s.gpus for s in samples if s.gpus]
    if not gpu_rows:
        return [], None
    if any(g.proc_mb is not None for gpus in gpu_rows for g in gpus):
        return [[g.proc_mb or 0.0 for g in gpus] for gpus in gpu_rows], "nvml_process"
    if not baseline_used_mb:
        return [[g.used_mb for g in gpus] for gpus in gpu_rows], "device_used"
    return [[max(0.0, g.used_mb - b) for g, b in zip(gpus, baseline_used_mb, strict=False)] for gpus in gpu_rows], (
        "device_minus_baseline"
    )


def peak_vram(samples: list[Sample], baseline_used_mb: list[float] | None) -> tuple[float | None, str | None]:
    """Peak VRAM of the worker's process tree, summed over the run's GPUs, and the method (see vram_per_gpu)."""
    rows, method = vram_per_gpu(samples, baseline_used_mb)
    return (max(sum(r) for r in rows), method) if rows else (None, None)


def peak_vram_per_gpu(samples: list[Sample], baseline_used_mb: list[float] | None) -> float | None:
    """The highest VRAM any one of the run's GPUs held for the tree: what must fit on each card."""
    rows, _ = vram_per_gpu(samples, baseline_used_mb)
    return max((max(r) for r in rows if r), default=None)


def energy_j(samples: list[Sample], start: float, end: float) -> tuple[float | None, str | None]:
    """GPU energy between wall-clock times `start` and `end`, summed over GPUs, and the method.

    `nvml_energy_counter`: difference of NVML's total energy counter at the samples bracketing the window.
    `power_integral`: trapezoid integral of sampled power, where the GPU has no energy counter.
    """
    window = [s for s in samples if s.gpus and start <= s.time <= end]
    if len(window) < 2:
        return None, None
    first, last = window[0].gpus, window[-1].gpus
    if all(g.energy_j is not None for g in first + last):
        return sum(b.energy_j - a.energy_j for a, b in zip(first, last, strict=True)), "nvml_energy_counter"
    total = 0.0
    for a, b in zip(window, window[1:], strict=False):
        power = [(ga.power_w, gb.power_w) for ga, gb in zip(a.gpus, b.gpus, strict=True)]
        if any(pa is None or pb is None for pa, pb in power):
            return None, None
        total += sum((pa + pb) / 2 for pa, pb in power) * (b.time - a.time)
    return total, "power_integral"


def mean_gpu_util_pct(samples: list[Sample], start: float, end: float) -> float | None:
    values = [
        g.util_pct
        for s in samples
        if s.gpus and start <= s.time <= end
        for g in s.gpus
        if g.util_pct is not None
    ]
    return sum(values) / len(values) if values else None
