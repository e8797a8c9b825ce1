"""Resource metrics on recorded samples (the shape bench/sweep/sampler.py writes)."""

import pytest

from bench.core.measure import energy_j, mean_gpu_util_pct, peak_rss_mb, peak_vram, peak_vram_per_gpu
from tests.conftest import sample


def gpu(used_mb, proc_mb=None, energy=None, power=None, util=None, index=0):
    return {"index": index, "used_mb": used_mb, "proc_mb": proc_mb, "energy_j": energy, "power_w": power,
            "util_pct": util}


def gpu_sample(t, used_mb, proc_mb=None, energy=None, power=None, util=None):
    gpus = [gpu(used_mb, proc_mb, energy, power, util)]
    return sample(t=t, time=1000.0 + t, rss_mb=500 + t, cpu_pct=100.0, gpus=gpus)


def test_peak_rss_is_the_largest_sample():
    assert peak_rss_mb([gpu_sample(0, 0), gpu_sample(3, 0), gpu_sample(1, 0)]) == 503


def test_per_process_vram_is_preferred_when_nvml_reports_it():
    samples = [gpu_sample(0, 1000, proc_mb=200), gpu_sample(1, 9000, proc_mb=4000), gpu_sample(2, 9000, proc_mb=3000)]
    assert peak_vram(samples, [800.0]) == (4000, "nvml_process")


def test_without_per_process_figures_vram_is_device_used_minus_idle_baseline():
    samples = [gpu_sample(0, 1000), gpu_sample(1, 7000), gpu_sample(2, 5000)]
    assert peak_vram(samples, [800.0]) == (6200, "device_minus_baseline")


def test_a_data_parallel_run_reports_the_total_and_what_each_card_held():
    def two_gpus(t, proc_mb):
        return sample(t=t, time=1000.0 + t, gpus=[gpu(9000, proc_mb[0]), gpu(9000, proc_mb[1], index=1)])

    samples = [two_gpus(0, (1000, 1200)), two_gpus(1, (3000, 2500)), two_gpus(2, (2000, 3900))]
    assert peak_vram(samples, None) == (5900, "nvml_process")  # the highest sum, at t=2
    assert peak_vram_per_gpu(samples, None) == 3900


def test_no_gpu_samples_no_vram():
    assert peak_vram([sample(rss_mb=1)], None) == (None, None)
    assert peak_vram_per_gpu([sample(rss_mb=1)], None) is None


def test_energy_from_the_counter_over_the_window():
    samples = [gpu_sample(t, 1000, energy=100.0 * t) for t in range(10)]
    assert energy_j(samples, 1002.0, 1007.0) == (500.0, "nvml_energy_counter")


def test_energy_integrates_power_where_there_is_no_counter():
    samples = [gpu_sample(t, 1000, power=300.0) for t in range(5)]
    joules, method = energy_j(samples, 1000.0, 1004.0)
    assert (joules, method) == (pytest.approx(1200.0), "power_integral")


def test_mean_utilisation_over_the_window():
    samples = [gpu_sample(t, 1000, util=u) for t, u in enumerate([0, 90, 100, 0])]
    assert mean_gpu_util_pct(samples, 1001.0, 1002.0) == 95.0


def test_without_a_baseline_nothing_is_subtracted_and_the_method_says_so():
    samples = [gpu_sample(0, 1000.0), gpu_sample(1, 7000.0)]
    assert peak_vram(samples, None) == (7000.0, "device_used")
