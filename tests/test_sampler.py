"""The sampler watches the run's own GPUs, named as CUDA_VISIBLE_DEVICES names them (a stand-in NVML)."""

import os
import subprocess
import sys
import types
from pathlib import Path

import psutil
import pytest
from omegaconf import OmegaConf

from bench.analysis.assess import sampler_cost
from bench.core import metrics as registry
from bench.sweep import sampler as sampler_module
from bench.sweep.sampler import Sampler, SamplerStats, host_facts
from tests.conftest import REPO, sample

CONF = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "sampler" / "default.yaml"))  # the defaults


class NVMLError(Exception):
    pass


def fake_nvml(uuids):
    """Four GPUs; GPU i has (i + 1) GB in use."""
    nv = types.SimpleNamespace(NVMLError=NVMLError, nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: len(uuids))

    def by_index(i):
        if not 0 <= i < len(uuids):
            raise NVMLError("invalid argument")
        return i

    def by_uuid(uuid):
        if uuid not in uuids:
            raise NVMLError("not found")
        return uuids.index(uuid)

    nv.nvmlDeviceGetHandleByIndex, nv.nvmlDeviceGetHandleByUUID = by_index, by_uuid
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=(h + 1) * 2**30)
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=h * 2**20)
    ]
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=50)
    nv.nvmlDeviceGetPowerUsage = lambda h: 100_000
    nv.nvmlDeviceGetTotalEnergyConsumption = lambda h: 1_000_000
    return nv


def sampled_used_mb(tmp_path, monkeypatch, devices):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(["GPU-a", "GPU-b", "GPU-c", "GPU-d"]))
    sampler = Sampler(tmp_path / "samples.jsonl", **CONF, devices=devices)
    sampler.root = psutil.Process()
    gpus = sampler.sample().gpus or []
    assert [g.index for g in gpus] == list(range(len(gpus)))  # cuda:i of the run
    return sampler.stats.baseline_used_mb, [g.used_mb for g in gpus], [g.proc_mb for g in gpus]


def test_only_the_runs_gpus_are_sampled(tmp_path, monkeypatch):
    baseline, used, proc = sampled_used_mb(tmp_path, monkeypatch, ["2", "3"])
    assert baseline == used == [3072, 4096] and proc == [2, 3]


def test_gpus_named_by_uuid(tmp_path, monkeypatch):
    assert sampled_used_mb(tmp_path, monkeypatch, ["GPU-b"])[1] == [2048]


def test_every_gpu_when_not_told_and_none_that_nvml_does_not_know(tmp_path, monkeypatch):
    assert sampled_used_mb(tmp_path, monkeypatch, None)[1] == [1024, 2048, 3072, 4096]
    assert sampled_used_mb(tmp_path, monkeypatch, ["-1"])[0] is None  # CUDA_VISIBLE_DEVICES=-1: no GPU to watch


def test_each_sample_records_the_hosts_load_and_the_trees_cpu_counters(tmp_path):
    sampler = Sampler(tmp_path / "samples.jsonl", CONF["interval_s"], gpu=False)
    sampler.root = psutil.Process()
    first = sampler.sample()
    sum(i * i for i in range(200_000))  # some CPU time in the tree (this process) between the samples
    second = sampler.sample()
    assert first.load1 >= 0 and first.gpus is None
    # Cumulative counters: the tree's CPU seconds never exceed the machine's busy seconds gone by.
    assert second.tree_cpu_s >= first.tree_cpu_s > 0
    assert second.host_busy_s >= first.host_busy_s > 0 and second.harness_cpu_s >= first.harness_cpu_s


def test_cpu_time_of_a_tree_process_that_exited_still_counts(tmp_path):
    sampler = Sampler(tmp_path / "samples.jsonl", CONF["interval_s"], gpu=False)
    sampler.root = psutil.Process()
    sampler._cpu_s = {999_999_999: 5.0}  # seen in an earlier sample, gone since
    assert sampler.sample().tree_cpu_s >= 5.0


def test_other_processes_on_the_runs_gpu_are_listed_as_in_optimum_benchmarks_isolation_check(tmp_path, monkeypatch):
    nv = fake_nvml(["GPU-a"])
    other = psutil.Process().parent().pid  # exists, but is not the sampled tree
    gone = 2**22 + 12345  # a pid that does not exist here (another PID namespace)
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        types.SimpleNamespace(pid=p, usedGpuMemory=2**20) for p in (os.getpid(), other, gone)
    ]
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    sampler = Sampler(tmp_path / "samples.jsonl", **CONF, devices=["0"])
    sampler.root = psutil.Process()
    (gpu,) = sampler.sample().gpus
    assert gpu.other_pids == [other] and gpu.proc_mb == 1


def test_host_facts_name_the_cpu_its_cores_and_memory():
    facts = host_facts(gpu=False)
    assert facts["cpu_model"] and facts["cpu_cores"] >= facts["cpus_usable"] >= 1 and facts["ram_mb"] > 0
    assert "gpu_driver" not in facts


def test_host_facts_read_the_gpu_driver_and_models(monkeypatch):
    nv = fake_nvml(["GPU-a", "GPU-b"])
    nv.nvmlSystemGetDriverVersion = lambda: "580.82.07"
    nv.nvmlDeviceGetName = lambda h: f"NVIDIA H{h}00"
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    facts = host_facts()
    assert facts["gpu_driver"] == "580.82.07" and facts["gpus"] == ["NVIDIA H000", "NVIDIA H100"]


# The sampler's own cost: bounded by construction, and recorded (no timings asserted; only what it reads when).


def sampler_of(tmp_path, root: psutil.Process | None = None) -> Sampler:
    sampler = Sampler(tmp_path / "samples.jsonl", CONF["interval_s"], gpu=False)
    sampler.root = root or psutil.Process()
    return sampler


def counting_children(monkeypatch, root: psutil.Process) -> list[int]:
    calls = []
    real = root.children
    monkeypatch.setattr(root, "children", lambda **kw: calls.append(1) or real(**kw))
    return calls


def test_the_tree_is_not_rescanned_every_tick(tmp_path, monkeypatch):
    # Finding a tree's children reads every process on the machine: the sampler does it once per rescan period.
    monkeypatch.setattr(sampler_module, "TREE_RESCAN_S", 1e9)
    sampler = sampler_of(tmp_path)
    calls = counting_children(monkeypatch, sampler.root)
    for _ in range(5):
        sampler.sample()
    assert len(calls) == 1 and sampler.stats.samples == 5


def test_a_process_that_left_the_tree_makes_the_next_tick_rescan_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sampler_module, "TREE_RESCAN_S", 1e9)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sampler = sampler_of(tmp_path)
        sampler.sample()
        assert child.pid in sampler._procs
    finally:
        child.kill()
        child.wait()
    sampler.sample()  # reads the child, finds it gone
    sampler.sample()  # rescans
    assert child.pid not in sampler._procs and os.getpid() in sampler._procs


def test_a_tick_that_costs_more_than_the_budget_stretches_the_interval():
    sampler = Sampler(Path("unused"), interval_s=0.1, gpu=False)
    assert sampler.wait_s(0.0001) == 0.1  # cheap ticks: the configured interval
    # A tick of 5 ms repeated every 0.1 s would take 5 % of a core: it waits until it is CPU_BUDGET of one.
    assert sampler.wait_s(0.005) == pytest.approx(0.005 / sampler_module.CPU_BUDGET)
    assert Sampler(Path("unused"), interval_s=0.0, gpu=False).wait_s(0.001) > 0  # interval 0 cannot spin a core


def test_each_sample_carries_the_samplers_own_cpu_seconds(tmp_path):
    sampler = sampler_of(tmp_path)
    first = sampler.sample()
    second = sampler.sample()
    assert 0 <= first.sampler_cpu_s <= second.sampler_cpu_s


def test_a_pid_on_the_gpu_is_looked_up_once(tmp_path, monkeypatch):
    nv = fake_nvml(["GPU-a"])
    other = psutil.Process().parent().pid
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [types.SimpleNamespace(pid=other, usedGpuMemory=2**20)]
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    looked_up = []
    monkeypatch.setattr(psutil, "pid_exists", lambda pid: looked_up.append(pid) or True)
    sampler = Sampler(tmp_path / "samples.jsonl", **CONF, devices=["0"])
    sampler.root = psutil.Process()
    assert [sampler.sample().gpus[0].other_pids for _ in range(3)] == [[other]] * 3
    assert looked_up == [other]


def test_the_summary_records_the_samplers_cost_per_sample_and_per_training_second():
    # 20 samples took 0.01 CPU s: 0.5 ms each; over the training window (bracketed 10 s -> 20 s) it spent
    # 0.005 CPU s: 0.05 % of one core.
    samples = [sample(time=t, host_busy_s=0.0, sampler_cpu_s=c) for t, c in [(5, 0.001), (10, 0.002), (20, 0.007)]]
    cost = sampler_cost(samples, (10, 20), SamplerStats(samples=20, sampler_cpu_s=0.01))
    assert cost["sampler_tick_ms"] == pytest.approx(0.5) and cost["sampler_cpu_pct"] == pytest.approx(0.05)
    assert {"sampler_samples", "sampler_cpu_s"} <= set(cost) and all(registry.get(name) for name in cost)


def test_samples_from_before_the_counter_give_no_per_training_second_figure():
    samples = [sample(time=t, host_busy_s=0.0) for t in (10, 20)]
    cost = sampler_cost(samples, (10, 20), SamplerStats(samples=2, sampler_cpu_s=0.001))
    assert "sampler_cpu_pct" not in cost and "sampler_tick_ms" in cost
    assert "sampler_tick_ms" not in sampler_cost([], None, SamplerStats())  # no samples: no cost per sample
