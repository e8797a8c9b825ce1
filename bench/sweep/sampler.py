"""Resource sampling of a worker's process tree, in a background thread of the parent.

CPU: RSS and CPU percent of the whole tree via psutil. NVIDIA GPUs: via NVML (nvidia-ml-py), on each of the
run's GPUs (the devices it was pinned to; every GPU of the machine when not told), the tree's own VRAM where the
driver reports per-process figures, the device's used memory, utilisation, power and total energy counter.

Host load, to say how far a run's numbers can be trusted: the 1-minute load average, the machine's busy CPU
seconds and the CPU seconds of the worker tree and of this harness process (cumulative counters: their
differences over the training window are what other processes took), and on GPUs the compute processes
on the run's devices that are not the worker tree (optimum-benchmark's device-isolation check).

Its own cost is bounded and recorded: the process tree is rescanned only every TREE_RESCAN_S (finding a tree's
children reads /proc/PID/stat of every process on the machine, most of a tick's cost), each process's files
are read once per tick, and a tick that costs more than CPU_BUDGET of one core at the configured interval
stretches the interval instead (more GPUs, a bigger tree: fewer samples, not more CPU). Each sample carries the
sampler thread's cumulative CPU seconds, so the summary can say what it cost per second of training.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.core.record import GpuSample, Sample, write_line

MB = 2**20
# A new child (torchrun's ranks, compile workers) is seen at most this late: workers start them seconds apart,
# and a rescan reads every process on the machine.
TREE_RESCAN_S = 1.0
CPU_BUDGET = 0.01  # the sampler's CPU seconds per wall second at most: 1 % of one core


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

    def __init__(self, out: Path, interval_s: float, gpu: bool, devices: list[str] | None = None):
        """`interval_s`, `gpu`: the sampler group (conf/sampler/, their only defaults); `devices`: the run's GPUs
        as CUDA_VISIBLE_DEVICES names them (PCI-ordered indices or UUIDs)."""
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
        self._cpu_s: dict[int, float] = {}  # CPU seconds last seen per tree pid; exited processes keep theirs
        self._rescan_at = 0.0  # perf_counter time of the next tree rescan
        self._foreign: dict[int, bool] = {}  # other processes on the GPUs: whether each pid exists here
        self._halt = threading.Event()
        self._t0 = time.perf_counter()
        self._cpu0 = time.thread_time()  # reset when the thread starts: its CPU seconds count from there

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
        """The tree's processes, rescanned every TREE_RESCAN_S or as soon as one of them has gone."""
        now = time.perf_counter()
        if now >= self._rescan_at:
            try:
                current = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return []
            # Keep Process objects between samples: cpu_percent() measures since the previous call on the object.
            self._procs = {p.pid: self._procs.get(p.pid, p) for p in current}
            self._rescan_at = now + TREE_RESCAN_S
        return list(self._procs.values())

    def _read_tree(self, procs: list[psutil.Process]) -> tuple[float, float, float]:
        """RSS (MB), CPU percent and cumulative CPU seconds of the tree (processes that have exited since keep
        their last CPU seconds); each process's stat file read once (oneshot)."""
        rss = cpu = 0.0
        for p in procs:
            try:
                with p.oneshot():
                    mem, pct, t = p.memory_info().rss, p.cpu_percent(None), p.cpu_times()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                self._rescan_at = 0.0  # the tree changed: look again next tick
                continue
            except psutil.AccessDenied:
                continue
            rss, cpu = rss + mem, cpu + pct
            self._cpu_s[p.pid] = t.user + t.system
        return rss / MB, cpu, sum(self._cpu_s.values())

    def _host(self) -> dict[str, Any]:
        me = os.times()  # the harness itself (this thread, the progress display) is not "others"
        return {
            "load1": os.getloadavg()[0],
            "host_busy_s": busy_cpu_s(psutil.cpu_times()),
            "harness_cpu_s": me.user + me.system,
            "sampler_cpu_s": time.thread_time() - self._cpu0,  # this thread's own, up to this tick
        }

    def _exists(self, pid: int) -> bool:
        """Whether a pid another process computes with exists here, asked once per pid (a file read each)."""
        if pid not in self._foreign:
            self._foreign[pid] = psutil.pid_exists(pid)
        return self._foreign[pid]

    def _gpu(self, pids: set[int]) -> list[GpuSample]:
        nv = self.nvml
        rows = []
        for i, h in enumerate(self.handles):
            row = GpuSample(index=i, used_mb=nv.nvmlDeviceGetMemoryInfo(h).used / MB)  # i: cuda:i
            with contextlib.suppress(nv.NVMLError):
                procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
                used = [p.usedGpuMemory for p in procs if p.pid in pids and p.usedGpuMemory is not None]
                row.proc_mb = sum(used) / MB if used else None
                # As optimum-benchmark's isolation check: pids that exist here (a pid from another PID
                # namespace does not) and are not the worker tree.
                row.other_pids = sorted(p.pid for p in procs if p.pid not in pids and self._exists(p.pid))
            with contextlib.suppress(nv.NVMLError):
                row.util_pct = nv.nvmlDeviceGetUtilizationRates(h).gpu
            with contextlib.suppress(nv.NVMLError):
                row.power_w = nv.nvmlDeviceGetPowerUsage(h) / 1000
            with contextlib.suppress(nv.NVMLError):
                row.energy_j = nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1000
            rows.append(row)
        return rows

    def sample(self) -> Sample:
        procs = self._tree()
        rss_mb, cpu_pct, tree_cpu_s = self._read_tree(procs)
        row = Sample(t=round(time.perf_counter() - self._t0, 4), time=time.time(), rss_mb=rss_mb, cpu_pct=cpu_pct,
                     tree_cpu_s=tree_cpu_s, **self._host())  # fmt: skip
        if self.handles:
            row.gpus = self._gpu({p.pid for p in procs})
        self.stats.samples += 1
        return row

    def baseline_used_mb(self) -> list[float] | None:
        if not self.handles:
            return None
        return [self.nvml.nvmlDeviceGetMemoryInfo(h).used / MB for h in self.handles]

    def run(self) -> None:
        self._cpu0 = time.thread_time()
        try:
            with open(self.out, "a", encoding="utf-8") as fh:
                while not self._halt.is_set():
                    tick = time.thread_time()
                    write_line(fh, self.sample())
                    self._halt.wait(self.wait_s(time.thread_time() - tick))
        except OSError as e:  # a full disk: the run goes on unsampled, and its summary says so
            self.stats.error = f"resource samples stopped after {self.stats.samples}: {e.strerror} ({self.out})"
        self.stats.sampler_cpu_s = time.thread_time() - self._cpu0

    def wait_s(self, tick_cpu_s: float) -> float:
        """The pause after a tick that cost `tick_cpu_s` CPU seconds: the configured interval, or longer where
        that tick repeated at the interval would take more than CPU_BUDGET of one core."""
        return max(self.interval_s, tick_cpu_s / CPU_BUDGET)

    def stop(self) -> SamplerStats:
        self._halt.set()
        self.join()
        return self.stats


def busy_cpu_s(t) -> float:
    """CPU seconds the whole machine spent busy, summed over cores (psutil.cpu_times(): all but idle and
    iowait; guest time is already inside user time)."""
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def host_facts(gpu: bool = True) -> dict[str, Any]:
    """The machine a run measured: CPU model, cores, RAM, GPU models and driver (read in the parent, without
    torch; the worker adds torch's own view in the summary's `hardware`)."""
    facts: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_cores": psutil.cpu_count(logical=True),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count(),
        "ram_mb": psutil.virtual_memory().total / MB,
    }
    nv = _nvml() if gpu else None
    if nv is not None:
        with contextlib.suppress(Exception):
            driver = nv.nvmlSystemGetDriverVersion()
            facts["gpu_driver"] = driver.decode() if isinstance(driver, bytes) else driver
        with contextlib.suppress(Exception):
            names = [nv.nvmlDeviceGetName(nv.nvmlDeviceGetHandleByIndex(i)) for i in range(nv.nvmlDeviceGetCount())]
            facts["gpus"] = [n.decode() if isinstance(n, bytes) else n for n in names]
    return facts
