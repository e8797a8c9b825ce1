"""The sampler watches the run's own GPUs, named as CUDA_VISIBLE_DEVICES names them (a stand-in NVML)."""

import os
import sys
import types

import psutil

from bench.sampler import Sampler


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
