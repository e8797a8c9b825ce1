"""Every metric a run reports, declared once: unit, direction, where it is shown, default gate tolerance.

The summary writes only declared metrics, the report takes its columns from here and the regression gate
its directions and tolerances (as lm-evaluation-harness registers `higher_is_better` with each metric).
An unknown name is an error, never a silent skip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# A step's phases, in order (bench/worker/phases.py measures them; named here, where every metric is declared)
PHASES = ("data", "forward", "loss", "backward", "optimizer", "rest")
PHASE_NAMES = {"data": "data", "forward": "forward", "loss": "loss and metrics", "backward": "backward",
               "optimizer": "optimizer", "rest": "the rest"}  # fmt: skip

Place = Literal["table", "runs"]  # table: the report's first table; runs: runs.csv / runs.parquet


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    higher_is_better: bool | None  # None: neither direction is better (a count, a method)
    shown: tuple[Place, ...] = ("runs",)
    rel_tol: float | None = None  # default tolerance of bench.compare; None: not gated by default
    source: Literal["metrics", "quality"] = "metrics"  # the summary section it lives in


BOTH: tuple[Place, ...] = ("table", "runs")

METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        # Throughput over the steady-state steps (after skip_steps)
        Metric("tokens_per_s", "tokens/s", True, BOTH, rel_tol=0.05),
        Metric("tokens_per_s_per_gpu", "tokens/s", True),
        Metric("trainable_tokens_per_s", "tokens/s", True),
        Metric("samples_per_s", "samples/s", True),
        Metric("step_time_s_mean", "s", False),
        Metric("steady_steps", "steps", None),
        # Where a steady step's time went (bench/worker/phases.py): the mean per step, summing to its time
        *(Metric(f"phase_{phase}_ms", "ms", False) for phase in PHASES),
        # Memory
        Metric("peak_vram_mb", "MiB", False, BOTH, rel_tol=0.05),
        Metric("peak_vram_mb_per_gpu", "MiB", False),
        Metric("vram_method", "method", None),
        Metric("peak_rss_mb", "MiB", False, BOTH, rel_tol=0.10),
        Metric("torch_max_allocated_mb", "MiB", False),
        Metric("torch_max_reserved_mb", "MiB", False),
        Metric("parent_peak_rss_mb", "MiB", False),
        # Energy and utilisation (GPU)
        Metric("energy_j_steady", "J", False),
        Metric("energy_method", "method", None),
        Metric("energy_j_per_1k_tokens", "J", False, BOTH),
        Metric("gpu_util_pct_mean", "%", True),
        Metric("model_tflops_per_s", "TFLOP/s", True),
        Metric("hardware_tflops_per_s", "TFLOP/s", True),
        Metric("mfu", "fraction", True, BOTH),
        Metric("hfu", "fraction", True),
        Metric("peak_tflops", "TFLOP/s", None),
        # Loss over the training steps
        Metric("steps", "steps", None),
        Metric("first_loss", "nats", None, BOTH),  # the base model's loss: a parity check, not a score
        Metric("final_loss", "nats", False, BOTH, rel_tol=0.02),
        Metric("tokens", "tokens", None),
        Metric("trainable_tokens", "tokens", None),
        # Batch layout (train.packing): pad tokens fed / all token slots fed, sequences per row fed
        Metric("padding_ratio", "fraction", False, BOTH),
        Metric("sequences_per_row", "sequences", None),
        # Time to quality (eval.every_steps, eval.target_loss): wall time from the start of training,
        # the held-out evaluations included, as MLPerf Training counts it
        Metric("train_eval_s", "s", False),  # the held-out evaluations during training (off the steps' clock)
        Metric("time_to_target_s", "s", False, BOTH),
        Metric("steps_to_target", "steps", False),
        # Where the time went
        Metric("wall_s", "s", False),
        Metric("env_build_s", "s", False),  # one-time, outside wall_s: this run built the environment
        Metric("env_check_s", "s", False),  # outside wall_s: checking an environment already built
        Metric("env_size_mb", "MiB", None),  # the environment this run built, on disk
        Metric("data_prepare_s", "s", False),  # outside wall_s: selecting the rows (or finding the selection cached)
        Metric("model_build_s", "s", False),  # one-time, outside wall_s: this run built the local model
        Metric("model_wait_s", "s", False),  # outside wall_s: another process built it while this run waited
        Metric("model_prepare_s", "s", False),
        Metric("model_load_s", "s", False),
        Metric("setup_s", "s", False),
        Metric("train_s", "s", False),
        Metric("eval_s", "s", False),
        Metric("sampler_samples", "samples", None),
        Metric("sampler_cpu_s", "s", False),
        Metric("sampler_tick_ms", "ms", False),  # the sampler's CPU time per sample, over the run
        Metric("sampler_cpu_pct", "% of one core", False),  # its CPU seconds per second of the training window
        # The host's load while the run trained (bench.analysis.assess.host_load): how far its speed can be trusted
        Metric("load_avg_1m", "load", None),
        Metric("other_cpu_cores", "cores", None),  # above assess.SHARED_CPU_CORES the run shared its machine
        Metric("gpu_other_processes", "processes", None),
        # Held-out quality (bench/worker/evaluate.py)
        Metric("heldout_examples", "rows", None, source="quality"),
        Metric("heldout_rows_without_answer", "rows", None, source="quality"),
        Metric("heldout_answer_tokens", "tokens", None, source="quality"),
        Metric("heldout_loss", "nats", False, BOTH, rel_tol=0.02, source="quality"),
        Metric("heldout_ppl", "perplexity", False, source="quality"),
        Metric("generated", "answers", None, source="quality"),
        Metric("rouge_l", "F1", True, BOTH, source="quality"),
        Metric("bleu4", "BLEU/100", True, BOTH, source="quality"),
        Metric("bleu4_4gram_matches", "4-grams", None, source="quality"),
    ]
}


def get(name: str) -> Metric:
    """The declared metric `name`; an unknown name is a KeyError listing the known ones."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def declared(values: dict[str, object], source: str = "metrics") -> dict[str, object]:
    """`values` checked against the registry: every key must be a declared metric of that summary section."""
    for name in values:
        if get(name).source != source:
            raise KeyError(f"metric {name!r} belongs in the summary's {get(name).source!r} section, not {source!r}")
    return values


def shown(place: Place) -> list[str]:
    return [m.name for m in METRICS.values() if place in m.shown]


def gated() -> dict[str, Metric]:
    """The metrics bench.compare checks by default."""
    return {m.name: m for m in METRICS.values() if m.rel_tol is not None}
