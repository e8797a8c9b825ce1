"""Resource sampling of a worker's process tree, in a background thread of the parent.

CPU: RSS and CPU percent of the whole tree via psutil. NVIDIA GPUs: via NVML (nvidia-ml-py), on each of the
run's GPUs (the devices it was pinned to; every GPU of the machine when not told), the tree's own VRAM where the
driver reports per-process figures, the device's used memory, utilisation, power and total energy counter.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

MB = 2**20


def _nvml():
    """The pynvml module, initialised, or None where there is no NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def host_has_gpu() -> bool:
    """Whether this host has a GPU a framework could train on, without torch: NVML devices, or ROCm's /dev/kfd."""
    nv = _nvml()
    with contextlib.suppress(Exception):
        if nv is not None and nv.nvmlDeviceGetCount() > 0:
            return True
    return Path("/dev/kfd").exists()


@dataclass
class SamplerStats:
    samples: int = 0
    sampler_cpu_s: float = 0.0  # CPU time the sampler thread itself spent
    baseline_used_mb: list[float] | None = None  # each GPU's used memory before the worker started
    error: str | None = None  # why sampling stopped early (the samples file could not be written)


class Sampler(threading.Thread):
    """Samples a process tree every `interval_s` seconds into a JSON Lines file."""

    def __init__(self, out: Path, interval_s: float = 0.1, gpu: bool = True, devices: list[str] | None = None):
        """`devices`: the run's GPUs as CUDA_VISIBLE_DEVICES names them (PCI-ordered indices or UUIDs)."""
        super().__init__(daemon=True, name="sftbench-sampler")
        self.root: psutil.Process | None = None
        self.out = out
        self.interval_s = interval_s
        self.nvml = _nvml() if gpu else None
        self.handles = []
        if self.nvml is not None:
            ids = devices if devices is not None else [str(i) for i in range(self.nvml.nvmlDeviceGetCount())]
            self.handles = [h for h in map(self._handle, ids) if h is not None]
        self.stats = SamplerStats(baseline_used_mb=self.baseline_used_mb())
        self._procs: dict[int, psutil.Process] = {}
        self._halt = threading.Event()
        self._t0 = time.perf_counter()

    def _handle(self, device: str):
        nv = self.nvml
        try:
            if device.isdigit():
                return nv.nvmlDeviceGetHandleByIndex(int(device))
            return nv.nvmlDeviceGetHandleByUUID(device)  # GPU-... or MIG-...
        except nv.NVMLError:
            return None  # not a GPU this driver knows (CUDA_VISIBLE_DEVICES=-1, say): nothing to sample there

    def attach(self, pid: int) -> None:
        """Sample the tree rooted at `pid` from now on (created first, to read the GPUs' idle baseline)."""
        self.root = psutil.Process(pid)
        self._t0 = time.perf_counter()
        self.start()

    def _tree(self) -> list[psutil.Process]:
        try:
            current = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        # Keep Process objects between samples: cpu_percent() measures since the previous call on the object.
        self._procs = {p.pid: self._procs.get(p.pid, p) for p in current}
        return list(self._procs.values())

    def _cpu(self, procs: list[psutil.Process]) -> tuple[float, float]:
        rss = cpu = 0.0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                rss += p.memory_info().rss
                cpu += p.cpu_percent(None)
        return rss / MB, cpu

    def _gpu(self, pids: set[int]) -> list[dict[str, Any]]:
        nv = self.nvml
        rows = []
        for i, h in enumerate(self.handles):
            row: dict[str, Any] = {"index": i, "used_mb": nv.nvmlDeviceGetMemoryInfo(h).used / MB}  # i: cuda:i
            with contextlib.suppress(nv.NVMLError):
                procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
                used = [p.usedGpuMemory for p in procs if p.pid in pids and p.usedGpuMemory is not None]
                row["proc_mb"] = sum(used) / MB if used else None
            with contextlib.suppress(nv.NVMLError):
                row["util_pct"] = nv.nvmlDeviceGetUtilizationRates(h).gpu
            with contextlib.suppress(nv.NVMLError):
                row["power_w"] = nv.nvmlDeviceGetPowerUsage(h) / 1000
            with contextlib.suppress(nv.NVMLError):
                row["energy_j"] = nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1000
            rows.append(row)
        return rows

    def sample(self) -> dict[str, Any]:
        procs = self._tree()
        rss_mb, cpu_pct = self._cpu(procs)
        row: dict[str, Any] = {
            "t": round(time.perf_counter() - self._t0, 4),
            "time": time.time(),  # wall clock, to line samples up with the worker's step events
            "rss_mb": rss_mb,
            "cpu_pct": cpu_pct,
        }
        if self.handles:
            row["gpus"] = self._gpu({p.pid for p in procs})
        self.stats.samples += 1
        return row

    def baseline_used_mb(self) -> list[float] | None:
        if not self.handles:
            return None
        return [self.nvml.nvmlDeviceGetMemoryInfo(h).used / MB for h in self.handles]

    def run(self) -> None:
        cpu_start = time.thread_time()
        try:
            with open(self.out, "a", encoding="utf-8") as fh:
                while not self._halt.is_set():
                    fh.write(json.dumps(self.sample()) + "\n")
                    fh.flush()
                    self._halt.wait(self.interval_s)
        except OSError as e:  # a full disk: the run goes on unsampled, and its summary says so
            self.stats.error = f"resource samples stopped after {self.stats.samples}: {e.strerror} ({self.out})"
        self.stats.sampler_cpu_s = time.thread_time() - cpu_start

    def stop(self) -> SamplerStats:
        self._halt.set()
        self.join()
        return self.stats
