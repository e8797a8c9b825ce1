"""The sampler watches the run's own GPUs, named as CUDA_VISIBLE_DEVICES names them (a stand-in NVML)."""

import os
import sys
import types

import psutil

from bench.sampler import Sampler, host_facts


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
    sampler = Sampler(tmp_path / "samples.jsonl", devices=devices)
    sampler.root = psutil.Process()
    gpus = sampler.sample().get("gpus", [])
    assert [g["index"] for g in gpus] == list(range(len(gpus)))  # cuda:i of the run
    return sampler.stats.baseline_used_mb, [g["used_mb"] for g in gpus], [g["proc_mb"] for g in gpus]


def test_only_the_runs_gpus_are_sampled(tmp_path, monkeypatch):
    baseline, used, proc = sampled_used_mb(tmp_path, monkeypatch, ["2", "3"])
    assert baseline == used == [3072, 4096] and proc == [2, 3]


def test_gpus_named_by_uuid(tmp_path, monkeypatch):
    assert sampled_used_mb(tmp_path, monkeypatch, ["GPU-b"])[1] == [2048]


def test_every_gpu_when_not_told_and_none_that_nvml_does_not_know(tmp_path, monkeypatch):
    assert sampled_used_mb(tmp_path, monkeypatch, None)[1] == [1024, 2048, 3072, 4096]
    assert sampled_used_mb(tmp_path, monkeypatch, ["-1"])[0] is None  # CUDA_VISIBLE_DEVICES=-1: no GPU to watch


def test_each_sample_records_the_hosts_load_and_the_trees_cpu_counters(tmp_path):
    sampler = Sampler(tmp_path / "samples.jsonl", gpu=False)
    sampler.root = psutil.Process()
    first = sampler.sample()
    sum(i * i for i in range(200_000))  # some CPU time in the tree (this process) between the samples
    second = sampler.sample()
    assert first["load1"] >= 0 and "gpus" not in first
    # Cumulative counters: the tree's CPU seconds never exceed the machine's busy seconds gone by.
    assert second["tree_cpu_s"] >= first["tree_cpu_s"] > 0
    assert second["host_busy_s"] >= first["host_busy_s"] > 0 and second["harness_cpu_s"] >= first["harness_cpu_s"]


def test_cpu_time_of_a_tree_process_that_exited_still_counts(tmp_path):
    sampler = Sampler(tmp_path / "samples.jsonl", gpu=False)
    sampler.root = psutil.Process()
    sampler._cpu_s = {999_999_999: 5.0}  # seen in an earlier sample, gone since
    assert sampler.sample()["tree_cpu_s"] >= 5.0


def test_other_processes_on_the_runs_gpu_are_listed_as_in_optimum_benchmarks_isolation_check(tmp_path, monkeypatch):
    nv = fake_nvml(["GPU-a"])
    other = psutil.Process().parent().pid  # exists, but is not the sampled tree
    gone = 2**22 + 12345  # a pid that does not exist here (another PID namespace)
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        types.SimpleNamespace(pid=p, usedGpuMemory=2**20) for p in (os.getpid(), other, gone)
    ]
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    sampler = Sampler(tmp_path / "samples.jsonl", devices=["0"])
    sampler.root = psutil.Process()
    (gpu,) = sampler.sample()["gpus"]
    assert gpu["other_pids"] == [other] and gpu["proc_mb"] == 1


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
