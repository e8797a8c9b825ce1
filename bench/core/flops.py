"""FLOP accounting for LoRA fine-tuning and model FLOPs utilisation (MFU).

Per optimizer step, with T the step's non-padding tokens, N the matmul parameters (base model and adapters,
the output projection included, the embedding lookup not), N_t the trainable (adapter) parameters,
L layers, d the attention width (heads x head_dim) and S2 = sum over sequences of length^2:

    attention forward   A   = 4 * L * d * S2        (Q.K^T and attention.V; full square, as PaLM counts it)
    forward                 = 2 * N * T + A
    backward                = 2 * N * T             (activation gradients, through the frozen base too)
                            + 2 * N_t * T           (weight gradients: adapters only, the base is frozen)
                            + 2 * A
    model FLOPs             = 4 * N * T + 2 * N_t * T + 3 * A

Full fine-tuning's usual 6 * N * T would overstate LoRA's work: frozen weights get no weight gradients.
Gradient checkpointing recomputes the forward once more; that is counted only in hardware FLOPs:

    hardware FLOPs          = model FLOPs + (2 * N * T + A   when gradient checkpointing is on)

MFU = model FLOPs per second / the GPU's peak dense bf16 FLOP/s (no sparsity).
"""

from __future__ import annotations

from typing import Any

from bench.core.record import Step

# Peak dense bf16 tensor throughput per GPU, TFLOP/s (vendor datasheets, without 2:4 sparsity).
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,  # the SXM part's name as NVML reports it
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def peak_bf16_flops(gpu_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a GPU by its reported name (longest matching entry), None if unknown."""
    matches = [k for k in PEAK_BF16_TFLOPS if k.lower() in gpu_name.lower()]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] * 1e12 if matches else None


def step_flops(event: Step, facts: dict[str, Any], gradient_checkpointing: bool) -> tuple[float, float]:
    """(model FLOPs, hardware FLOPs) of one optimizer step."""
    n, n_t = facts["matmul_params"], facts["trainable_params"]
    tokens = event.tokens
    attn = 4 * facts["num_layers"] * facts["attn_dim"] * (event.len_sq or 0)
    model = 4 * n * tokens + 2 * n_t * tokens + 3 * attn
    recompute = 2 * n * tokens + attn if gradient_checkpointing else 0
    return float(model), float(model + recompute)


def mfu(events: list[Step], facts: dict[str, Any], gradient_checkpointing: bool, peak: float) -> dict:
    """Achieved model and hardware FLOP/s over `events` (steady-state steps) and their fraction of `peak`."""
    seconds = sum(e.step_time_s for e in events)
    if not events or seconds <= 0 or not facts.get("num_layers"):
        return {}
    model = hardware = 0.0
    for e in events:
        m, h = step_flops(e, facts, gradient_checkpointing)
        model, hardware = model + m, hardware + h
    return {
        "model_tflops_per_s": model / seconds / 1e12,
        "hardware_tflops_per_s": hardware / seconds / 1e12,
        "mfu": model / seconds / peak,
        "hfu": hardware / seconds / peak,
    }
