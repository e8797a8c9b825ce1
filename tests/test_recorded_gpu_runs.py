"""GPU metrics recomputed from a TRL vs Unsloth sweep recorded on an NVIDIA H200 (tests/fixtures/h200-sweep):
Qwen2.5-0.5B architecture, LoRA r=16, batch 8, max length 1024, 30 steps, bf16."""

from pathlib import Path

import pytest

from bench.analysis.assess import gpu_metrics
from bench.core import flops, measure, record

SWEEP = Path(__file__).parent / "fixtures" / "h200-sweep"


def load(run: str):
    """A recorded run read through bench.core.record: a fixture that drifts from the record's format fails here."""
    r = record.load_run(SWEEP / run)
    return r.summary, r.worker, r.events, r.samples


@pytest.mark.parametrize("run", ["0-trl", "1-unsloth"])
def test_per_process_vram_was_available_and_chosen(run):
    _, _, _, samples = load(run)
    peak, method = measure.peak_vram(samples, baseline_used_mb=None)
    assert method == "nvml_process"
    device_peak = max(g.used_mb for s in samples for g in s.gpus or [])
    assert 0 < peak <= device_peak


@pytest.mark.parametrize("run", ["0-trl", "1-unsloth"])
def test_recorded_summary_is_reproduced_from_raw_files(run):
    summary, worker, events, samples = load(run)
    steady = [e for e in events if e.step > 3]
    m = gpu_metrics(steady, samples, worker, baseline=None)
    for key in ("peak_vram_mb", "energy_j_steady", "mfu", "model_tflops_per_s", "gpu_util_pct_mean"):
        assert m[key] == pytest.approx(summary.metrics[key]), key
    assert m["energy_method"] == "nvml_energy_counter"


def test_mfu_of_the_recorded_trl_run_follows_the_lora_formula():
    _, worker, events, _ = load("0-trl")
    facts = worker.model_facts
    steady = [e for e in events if e.step > 3]
    n, n_t = facts["matmul_params"], facts["trainable_params"]
    expected = (
        sum(
            4 * n * e.tokens + 2 * n_t * e.tokens + 3 * 4 * facts["num_layers"] * facts["attn_dim"] * e.len_sq
            for e in steady
        )
        / sum(e.step_time_s for e in steady)
        / 989e12
    )
    assert flops.mfu(steady, facts, False, flops.peak_bf16_flops("NVIDIA H200"))["mfu"] == pytest.approx(expected)
    assert 0 < expected < 1


def test_both_frameworks_trained_on_the_same_answer_tokens():
    trl_events, unsloth_events = load("0-trl")[2], load("1-unsloth")[2]
    assert [e.trainable_tokens for e in trl_events] == [e.trainable_tokens for e in unsloth_events]


@pytest.mark.parametrize("run", ["0-trl", "1-unsloth"])
def test_every_metric_of_a_gpu_run_is_declared_in_the_registry(run):
    """summary.metrics refuses undeclared names: a GPU run's full set passes (recomputed from its files)."""
    from bench.analysis.assess import metrics
    from bench.core import metrics as registry
    from bench.sweep.launch import Outcome
    from bench.sweep.sampler import SamplerStats

    _, worker, events, samples = load(run)
    outcome = Outcome(0, False, "", 60.0, SamplerStats(samples=10), "")
    m = metrics(events, samples, worker, outcome, skip_steps=3, samples_per_step=8)
    assert {"peak_vram_mb", "mfu", "energy_j_per_1k_tokens", "torch_max_allocated_mb"} <= set(m)
    assert all(registry.get(name) for name in m)
