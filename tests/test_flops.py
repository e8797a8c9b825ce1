import pytest

from bench.core.flops import mfu, peak_bf16_flops, step_flops
from tests.conftest import step

FACTS = {"matmul_params": 1_000_000, "trainable_params": 10_000, "num_layers": 2, "attn_dim": 64}
# 4 sequences of 250 tokens: S2 = 4 * 250^2
EVENT = step(step=5, tokens=1000, len_sq=250_000, step_time_s=1.0)


def test_lora_step_counts_weight_gradients_only_for_adapters():
    model, hardware = step_flops(EVENT, FACTS, gradient_checkpointing=False)
    attention = 4 * 2 * 64 * 250_000  # 1.28e8
    assert model == 4 * 1e6 * 1000 + 2 * 1e4 * 1000 + 3 * attention == pytest.approx(4.404e9)
    assert hardware == model


def test_gradient_checkpointing_adds_a_recomputed_forward_to_hardware_flops_only():
    model, hardware = step_flops(EVENT, FACTS, gradient_checkpointing=True)
    assert model == pytest.approx(4.404e9)
    assert hardware == pytest.approx(4.404e9 + 2e9 + 1.28e8)


def test_mfu_is_model_flops_per_second_over_peak():
    slow = step(step=6, tokens=1000, len_sq=250_000, step_time_s=3.0)
    m = mfu([EVENT, slow], FACTS, gradient_checkpointing=True, peak=1e12)
    assert m["model_tflops_per_s"] == pytest.approx(2 * 4.404e9 / 4.0 / 1e12)
    assert m["mfu"] == pytest.approx(2 * 4.404e9 / 4.0 / 1e12)
    assert m["hfu"] == pytest.approx(2 * 6.532e9 / 4.0 / 1e12)


def test_mfu_needs_steps_and_model_facts():
    assert mfu([], FACTS, False, 1e12) == {}
    assert mfu([EVENT], {}, False, 1e12) == {}


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H200", 989),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA L40S", 362),
        ("NVIDIA L4", 121),
    ],
)
def test_peak_flops_by_reported_gpu_name(name, tflops):
    assert peak_bf16_flops(name) == tflops * 1e12


def test_unknown_gpu_has_no_peak():
    assert peak_bf16_flops("Some Future GPU") is None
