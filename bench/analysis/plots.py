"""The report's figures, each comparing systems by name (bench.analysis.findings.run_labels, never a run directory):
throughput with its 95 % CI, loss against step and against wall time, memory over time with the peak marked,
quality as the difference to the base model with its interval, and GPU utilisation.

SVG with its text kept as text: report.html inlines the figures and stays one file, and a browser (or a test)
can read every legend entry and axis label.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysis.gate import REGRESSED  # noqa: E402
from bench.core import measure, metrics  # noqa: E402
from bench.core.metrics import PHASE_NAMES, PHASES  # noqa: E402
from bench.core.record import Sample, Step  # noqa: E402

MAX_POINTS = 2000  # per line: a long GPU run samples at 10 Hz; more points only grow the page
LEGEND_ID = "legend-entry"  # the id prefix of each legend entry in the SVG (tests read them back)
SYSTEM_ID = "system-label"  # the id prefix of each system named on an axis


@dataclass
class RunSeries:
    """One finished run's files as the figures need them, read once."""

    label: str  # what the legend calls it: its system (with seed / job where needed)
    system: str  # its system, which picks its colour
    events: list[Step] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    vram_baseline_mb: list[float] | None = None  # each GPU's used memory before the worker started
    peak_mb: float | None = None  # the run's peak-memory metric (VRAM, else RSS): the point marked

    def training_window(self) -> tuple[float, float] | None:
        """Wall-clock start and end of training, from the per-step events."""
        if not self.events:
            return None
        first, last = self.events[0], self.events[-1]
        return first.time - first.step_time_s, last.time


def colours(systems: list[str]) -> dict[str, str]:
    """One colour per system, the same in every figure."""
    return {s: f"C{i % 10}" for i, s in enumerate(dict.fromkeys(systems))}


def svg(fig, name: str) -> bytes:
    """The figure as SVG with text as text, its ids salted by its name (unique across one page, and the same
    on every build)."""
    buf = io.BytesIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def mark_legend(legend, name: str) -> None:
    for i, text in enumerate(legend.get_texts()):
        text.set_gid(f"{name}-{LEGEND_ID}-{i}")


def system_axis(ax, labels: list[str], name: str) -> None:
    """Systems down the y axis of a horizontal bar chart, first at the top."""
    ax.set_yticks(range(len(labels)), labels)
    for i, text in enumerate(ax.get_yticklabels()):
        text.set_gid(f"{name}-{SYSTEM_ID}-{i}")
    ax.invert_yaxis()


def thin(xs: list[float], ys: list[float], keep: int | None = None) -> tuple[list[float], list[float]]:
    """At most MAX_POINTS points, evenly spaced, always keeping index `keep` (a marked peak)."""
    step = max(1, math.ceil(len(xs) / MAX_POINTS))
    idx = sorted(set(range(0, len(xs), step)) | ({keep} if keep is not None else set()))
    return [xs[i] for i in idx], [ys[i] for i in idx]


def throughput(groups: pd.DataFrame, colour: dict[str, str]) -> bytes:
    """Mean tokens/s per system with its 95 % CI over seeds (`groups`: label, system, mean, half, n)."""
    name = "throughput"
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(groups) + 1.4))
    half = groups["half"].fillna(0)
    ax.barh(range(len(groups)), groups["mean"], xerr=half, capsize=4,
            color=[colour[s] for s in groups["system"]])  # fmt: skip
    for i, (mean, n, h) in enumerate(zip(groups["mean"], groups["n"], groups["half"], strict=True)):
        note = f"{mean:,.0f} ± {h:,.0f} (n={n})" if n > 1 and pd.notna(h) else f"{mean:,.0f} (n=1, no CI)"
        end = mean + (h if pd.notna(h) else 0)  # right of the error bar
        ax.annotate(note, (end, i), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
    system_axis(ax, list(groups["label"]), name)
    ax.set(xlabel="tokens/s (steady state; error bar: 95 % CI over seeds)", title="Throughput")
    ax.set_xlim(0, max(groups["mean"] + half) * 1.35)
    return svg(fig, name)


PHASE_COLOURS = ("#bbbbbb", "#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee")  # one per PHASES, in order


def phases(groups: pd.DataFrame) -> bytes | None:
    """Time per steady step by phase, stacked, per system (`groups`: label, then phase_<name>_ms per PHASES):
    where each system's step time goes."""
    name = "phases"
    columns = [f"phase_{p}_ms" for p in PHASES]
    if groups.empty or not set(columns) <= set(groups):
        return None
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(groups) + 1.8))
    left = pd.Series(0.0, index=groups.index)
    for phase, column, shade in zip(PHASES, columns, PHASE_COLOURS, strict=True):
        ax.barh(range(len(groups)), groups[column], left=left, color=shade, label=PHASE_NAMES[phase])
        left = left + groups[column]
    for i, total in enumerate(left):
        ax.annotate(f"{total:,.3g} ms", (total, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    system_axis(ax, list(groups["label"]), name)
    ax.set(xlabel="ms per optimizer step (steady state, mean over runs)", title="Where a step's time goes")
    ax.set_xlim(0, max(left) * 1.2)
    mark_legend(ax.legend(fontsize=8, ncols=3, loc="lower right"), name)
    return svg(fig, name)


def loss(runs: list[RunSeries], colour: dict[str, str]) -> bytes | None:
    """Training loss against optimizer step and against seconds since training began."""
    name = "loss"
    runs = [r for r in runs if any(e.loss is not None for e in r.events)]
    if not runs:
        return None
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for r in runs:
        window = r.training_window()
        logged = [e for e in r.events if e.loss is not None]
        by_step.plot([e.step for e in logged], [e.loss for e in logged], color=colour[r.system], label=r.label)
        timed = logged if window else []
        by_time.plot([e.time - window[0] for e in timed], [e.loss for e in timed], color=colour[r.system],
                     label=r.label)  # fmt: skip
    by_step.set(xlabel="optimizer step", ylabel="training loss (nats)", title="Loss against step")
    by_time.set(xlabel="seconds since training began (wall clock)", title="Loss against wall time")
    mark_legend(by_time.legend(fontsize=8), name)
    return svg(fig, name)


def memory_series(r: RunSeries) -> tuple[list[float], list[float], str]:
    """The quantity the peak-memory metric takes its maximum of, by the same method: the worker's VRAM summed
    over its GPUs, or its RSS on a CPU; with the samples' wall-clock times."""
    vram, method = measure.vram_per_gpu(r.samples, r.vram_baseline_mb)
    if vram:
        return [s.time for s in r.samples if s.gpus], [sum(row) for row in vram], f"VRAM, {method}"
    return [s.time for s in r.samples], [s.rss_mb for s in r.samples], "RSS"


def peak_index(ys: list[float], peak_mb: float | None) -> int:
    """The sample the run's peak-memory metric was taken at (VRAM's peak is over the training steps only, so
    it need not be the series' maximum); the maximum where the metric is missing or matches no sample."""
    if peak_mb is not None:
        hit = next((i for i, y in enumerate(ys) if abs(y - peak_mb) <= 1e-6 * max(1.0, abs(peak_mb))), None)
        if hit is not None:
            return hit
    return max(range(len(ys)), key=lambda i: ys[i])


def memory(runs: list[RunSeries], colour: dict[str, str]) -> bytes | None:
    """Memory over the run, each system's peak during training marked and labelled."""
    name = "memory"
    runs = [r for r in runs if r.samples]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.2))
    for r in runs:
        times, ys, what = memory_series(r)
        if not ys:
            continue
        t0 = r.samples[0].time - r.samples[0].t  # when the worker started
        peak = peak_index(ys, r.peak_mb)
        xs, shown = thin([t - t0 for t in times], ys, keep=peak)
        ax.plot(xs, shown, color=colour[r.system], label=f"{r.label} ({what})")
        ax.plot(times[peak] - t0, ys[peak], marker="v", color=colour[r.system], markersize=8)
        ax.annotate(f"peak {ys[peak]:,.0f}", (times[peak] - t0, ys[peak]), xytext=(0, 6), textcoords="offset points",
                    ha="center", fontsize=8)  # fmt: skip
    ax.set(xlabel="seconds since the worker started", ylabel="MiB",
           title="Memory over the run (▼ the peak the memory table reports)")  # fmt: skip
    mark_legend(ax.legend(fontsize=8), name)
    return svg(fig, name)


def quality(rouge: pd.DataFrame, heldout: pd.DataFrame, colour: dict[str, str]) -> bytes | None:
    """Quality as the difference to the base model: ROUGE-L with its bootstrap 95 % interval over prompts
    (`rouge`: label, system, diff, low, high), held-out loss with its 95 % CI over seeds where there are several
    (`heldout`: label, system, diff, half)."""
    name = "quality"
    titled = [(rouge, "ROUGE-L after training − base model (F1; 95 % bootstrap CI)"),
              (heldout, "held-out loss after training − base model (nats; 95 % CI over seeds)")]
    panels = [(d, title) for d, title in titled if not d.empty]
    if not panels:
        return None
    height = sum(0.5 * len(d) + 1.2 for d, _ in panels) + 0.4
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, height), squeeze=False, layout="constrained")
    for i, (ax, (d, title)) in enumerate(zip(axes[:, 0], panels, strict=True)):
        if "low" in d:
            err = [d["diff"] - d["low"], d["high"] - d["diff"]]
        else:
            err = d["half"].fillna(0)
        ax.barh(range(len(d)), d["diff"], xerr=err, capsize=4, color=[colour[s] for s in d["system"]])
        ax.axvline(0, color="black", linewidth=0.8)
        system_axis(ax, list(d["label"]), f"{name}{i}")
        ax.set(xlabel=title)
    fig.suptitle("Quality against the base model")
    return svg(fig, name)


def time_to_quality(runs: list[RunSeries], targets: list[float], colour: dict[str, str]) -> bytes | None:
    """Held-out loss during training against seconds since training began, the targets dashed."""
    name = "time_to_quality"
    evaluated = [(r, [e for e in r.events if e.heldout_loss is not None]) for r in runs]
    evaluated = [(r, events) for r, events in evaluated if events]
    if not evaluated:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    for r, events in evaluated:
        ax.plot([e.elapsed_s for e in events], [e.heldout_loss for e in events], marker=".",
                color=colour[r.system], label=r.label)  # fmt: skip
    for target in targets:
        ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="seconds since training began (evaluations included)", ylabel="held-out answer loss (nats)",
           title="Time to quality")  # fmt: skip
    mark_legend(ax.legend(fontsize=8), name)
    return svg(fig, name)


def utilisation(runs: list[RunSeries], colour: dict[str, str]) -> bytes | None:
    """GPU utilisation over the run (mean over the run's GPUs), for runs that had one."""
    name = "gpu_utilisation"
    gpu_runs = [r for r in runs if any(s.gpus for s in r.samples)]
    if not gpu_runs:
        return None
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for r in gpu_runs:
        rows = [s for s in r.samples if s.gpus]
        xs = [s.t for s in rows]
        ys = [sum(g.util_pct or 0 for g in s.gpus) / len(s.gpus) for s in rows]
        ax.plot(*thin(xs, ys), color=colour[r.system], label=r.label)
    ax.set(xlabel="seconds since the worker started", ylabel="GPU utilisation (%)", ylim=(0, 105),
           title="GPU utilisation")  # fmt: skip
    mark_legend(ax.legend(fontsize=8), name)
    return svg(fig, name)


def history(all_series: list) -> bytes:
    """Each metric against the releases or commits in order (history.Series), its CI as error bars, a step
    the gate calls a regression drawn red."""
    fig, axes = plt.subplots(len(all_series), 1, figsize=(9, 2.6 * len(all_series)), squeeze=False)
    for ax, s in zip(axes[:, 0], all_series, strict=True):
        xs = range(len(s.points))
        ax.errorbar(xs, [p.mean for p in s.points], yerr=[p.half() or 0 for p in s.points], marker="o", capsize=4)
        for i, step in enumerate(s.steps):
            if step == REGRESSED:
                ax.plot([i, i + 1], [s.points[i].mean, s.points[i + 1].mean], color="red", linewidth=3)
        ax.set_xticks(list(xs), [p.system for p in s.points], rotation=20, fontsize=8)
        ax.set_ylabel(f"{s.metric} ({metrics.get(s.metric).unit})", fontsize=8)
    fig.suptitle("History (red: a step the gate calls a regression)")
    fig.tight_layout()
    return svg(fig, "history")
