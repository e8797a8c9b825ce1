"""What a run writes, typed: its steps (events.jsonl), resource samples (samples.jsonl), the worker's report
(worker.json) and the run's summary (summary.json), each with one writer and one reader that checks every
field, and a run directory read once (Run). No other module parses a run file.

Standard library only: the worker writes its report through this module in its framework's environment.
A summary is a plain dict on disk (the same JSON a user reads); `FORMAT` numbers its shape. Files of older
harness versions load as long as their fields still mean what they meant: a field they lack is empty.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.core import results
from bench.core.data import LoadCounts
from bench.core.errors import SpecError, UserError
from bench.core.spec import from_mapping

# summary.json's shape; 1: written before it carried `format` (the recorded H200 sweep); 3: data.selection_sha256
# (the rows selected, bench.sweep.selection) and the job key of the selected rows
FORMAT = 3
# diverged: the worker finished, but its loss or gradient norm turned NaN or infinite, or both were exactly 0
Status = Literal["ok", "failed", "skipped", "timeout", "interrupted", "oom", "diverged"]
Scalar = int | float | str | bool | None  # a metric or quality value: numbers, and a method's name


class RecordError(UserError):
    """A results file that is missing, unreadable or not what its format says: one line naming the file, the
    field and the version that wrote it. `why`: the same without the directory, for a table of runs."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: {why}")
        self.why = why


@dataclass
class Gpu:
    name: str
    memory_mb: float | None = None
    capability: str | None = None


@dataclass
class Hardware:
    """What torch saw in the worker."""

    platform: str | None = None
    cpu: str | None = None
    cpu_count: int | None = None
    torch_threads: int | None = None
    cuda: str | None = None
    gpus: list[Gpu] = field(default_factory=list)

    @property
    def device(self) -> str:
        """The GPU trained on, "cpu" without one."""
        return self.gpus[0].name if self.gpus else "cpu"


@dataclass
class Host:
    """The machine as the parent read it (bench.sweep.sampler.host_facts), without torch."""

    cpu_model: str | None = None
    cpu_cores: int | None = None
    cpu_cores_physical: int | None = None
    cpus_usable: int | None = None
    ram_mb: float | None = None
    gpu_driver: str | None = None
    gpus: list[str] = field(default_factory=list)


@dataclass
class Effective:
    """How the job ran where the spec leaves a choice to the host or the framework."""

    precision: str | None = None
    gradient_checkpointing: bool | None = None
    train_examples: int | None = None  # the rows the framework trained on (its dataset, after its own drops)
    tokenize: str | None = None
    max_steps: int | None = None  # train.epochs turned into steps, or as set


@dataclass
class HeldoutCounts(LoadCounts):
    """The held-out split's loading counts (bench.core.data.LoadCounts) and its overlap with the training rows."""

    overlap_with_train: int | None = None


@dataclass
class DataCounts(LoadCounts):
    """The training rows' loading counts (bench.core.data.LoadCounts: read, kept, duplicates, skipped by problem),
    those over max length and dropped by the framework, and the held-out split's counts."""

    over_length_rows: int | None = None
    dropped_rows: int | None = None
    heldout: HeldoutCounts | None = None
    selection_sha256: str | None = None  # the rows selected (bench.sweep.selection): the data's identity


@dataclass
class Fingerprint:
    """What the framework's dataset and first batches were (bench.worker.callback): equal fingerprints, same tokens."""

    examples: int | None = None
    dataset_tokens: int | None = None
    dataset_trainable_tokens: int | None = None
    batches_hashed: int | None = None
    first_batches_sha256: str = ""
    packing: str = "none"


@dataclass
class Published:
    """A replayed published run (bench.sweep.published): its source and what this host left out of it."""

    source: str
    as_published: bool
    left_out: list[str] = field(default_factory=list)  # every difference from the publication, with its cause
    train_s: float | None = None  # the publication's own figures, set beside the measured ones only where
    peak_memory_gb: float | None = None  # the hardware and the data match (`unlike` empty)
    unlike: list[str] = field(default_factory=list)  # of hardware and data, what differs here


@dataclass
class SamplerInfo:
    interval_s: float | None = None
    baseline_used_mb: list[float] | None = None  # each GPU's used memory before the worker started


@dataclass
class Step:
    """One optimizer step (events.jsonl, a line each, written by the worker as it trains: worker/callback.py)."""

    step: int
    step_time_s: float  # wall time since the previous step ended: data, forward, backward, optimizer
    tokens: int  # non-padding tokens fed, over every data-parallel rank
    trainable_tokens: int  # of which the loss counts
    len_sq: int  # sum of squared sequence lengths: attention's share of the FLOPs
    time: float  # wall clock at the step's end, to line steps up with the resource samples
    tokens_fed: int | None = None  # padding included: pad share = 1 - tokens / tokens_fed (None: older harness)
    gpus: int = 1  # data-parallel ranks
    loss: float | None = None  # the Trainer's logged loss (NaN where it diverged)
    lr: float | None = None
    grad_norm: float | None = None
    heldout_loss: float | None = None  # eval.every_steps: held-out loss after this step, off the step's clock
    eval_s: float | None = None
    elapsed_s: float | None = None  # wall time since training began, evaluations included
    # The step's time by phase (bench/worker/phases.py: data, forward, loss, backward, optimizer, rest), in
    # seconds, summing to step_time_s; None: not measured (profile.phases=false, or an older harness)
    phases: dict[str, float] | None = None


@dataclass
class GpuSample:
    index: int  # cuda:index
    used_mb: float  # the device's used memory
    proc_mb: float | None = None  # NVML's per-process memory of the worker's tree (None: the driver gives none)
    other_pids: list[int] | None = None  # other compute processes on this GPU
    util_pct: float | None = None
    power_w: float | None = None
    energy_j: float | None = None  # NVML's total energy counter


@dataclass
class Sample:
    """One resource sample of the worker's process tree (samples.jsonl, a line each, written by the parent's
    sampler: sweep/sampler.py)."""

    t: float  # seconds since sampling began
    time: float  # wall clock, to line samples up with the steps
    rss_mb: float
    cpu_pct: float
    tree_cpu_s: float | None = None  # the tree's cumulative CPU seconds (None: older harness, as below)
    load1: float | None = None
    host_busy_s: float | None = None  # the host's busy CPU seconds so far
    harness_cpu_s: float | None = None  # the sweep process's own
    sampler_cpu_s: float | None = None  # the sampler thread's own
    gpus: list[GpuSample] | None = None


@dataclass
class Generation:
    """One held-out prompt's answer (generations.jsonl after training, base_generations.jsonl before it:
    written by the worker's worker/evaluate.py)."""

    prompt: str
    reference: str
    prediction: str
    rouge_l: float


def write_line(fh, record: Step | Sample) -> None:
    """One step or sample as a line of its JSON Lines file, flushed: a killed run keeps every line before."""
    fh.write(json.dumps(to_dict(record)) + "\n")
    fh.flush()


def read_lines(path: Path, cls: type) -> list[Any]:
    """A run's steps, samples or generations, each line checked against `cls`; a last line cut short by a
    killed writer is ignored, any other bad line is a RecordError naming the file, the line and the field."""
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for n, line in enumerate(lines, 1):
        try:
            rows.append(from_line(line, cls, path, f"line {n}"))
        except RecordError:
            if n == len(lines) and not line.rstrip().endswith("}"):
                break
            raise
    return rows


def from_line(line: str, cls: type, path: Path, where: str) -> Any:
    """One line of a JSON Lines run file as record `cls`."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        raise RecordError(path, f"{path.name} {where}: not JSON") from None
    return parse(cls, data, path, where)


@dataclass
class WorkerResult:
    """worker.json: what the worker reports about its run. A worker that failed reports status, reason and
    versions only; the rest stays empty."""

    status: Status
    reason: str = ""
    precision: str | None = None
    gradient_checkpointing: bool | None = None
    world_size: int = 1
    train_examples: int | None = None
    tokenize: str | None = None
    data: DataCounts = field(default_factory=DataCounts)
    timings: dict[str, float] = field(default_factory=dict)  # model load, setup, train, eval seconds
    model_facts: dict[str, Scalar] = field(default_factory=dict)  # parameter counts and shape (FLOPs)
    fingerprint: Fingerprint = field(default_factory=Fingerprint)
    layout: dict[str, Scalar] = field(default_factory=dict)  # tokens fed, padding, sequences per row
    torch_memory: dict[str, float] = field(default_factory=dict)
    train_window: list[float] | None = None  # wall-clock start and end of training (samples inside it count)
    versions: dict[str, str] = field(default_factory=dict)
    hardware: Hardware | None = None
    trainable_params: int | None = None
    quality: dict[str, Scalar] = field(default_factory=dict)  # held-out loss, perplexity, ROUGE-L, BLEU-4
    base_quality: dict[str, Scalar] = field(default_factory=dict)  # the same for the base model
    notes: list[str] = field(default_factory=list)
    worker_wall_s: float | None = None


@dataclass
class Summary:
    """summary.json: a run's outcome. Every status has every field; where nothing is known it is empty."""

    run: str
    status: Status
    reason: str = ""
    format: int = 1
    job_key: str | None = None  # what makes runs comparable: every table, ratio, gate and resume uses it
    seed: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    framework: str = ""
    system: str | None = None  # the framework with the kernels it was asked to use: what is compared
    framework_version: str | None = None  # what was installed, once known
    framework_version_requested: str | None = None
    source: dict[str, Any] | None = None  # framework.source: what was installed instead of the release
    overrides: list[str] | None = None  # the sweep's overrides of this run; None: not recorded (older harness)
    scenario: str | None = None  # the conf/scenario/ preset the run started from
    published: Published | None = None
    claims: list[dict[str, Any]] = field(default_factory=list)  # what the scenario's source claims, to check
    git_commit: str | None = None  # the harness's
    spec: str = results.SPEC
    events: str = results.EVENTS
    samples: str = results.SAMPLES
    python: str | None = None  # the framework environment's interpreter
    versions: dict[str, str] = field(default_factory=dict)
    hardware: Hardware | None = None  # None: the worker never reported it
    host: Host = field(default_factory=Host)
    effective: Effective = field(default_factory=Effective)
    quality: dict[str, Scalar] = field(default_factory=dict)
    base_quality: dict[str, Scalar] = field(default_factory=dict)
    data: DataCounts = field(default_factory=DataCounts)
    fingerprint: Fingerprint = field(default_factory=Fingerprint)
    notes: list[str] = field(default_factory=list)  # where a framework did not follow the spec, and more
    sampler: SamplerInfo = field(default_factory=SamplerInfo)
    metrics: dict[str, Scalar] = field(default_factory=dict)  # registered metrics only (bench.core.metrics)
    log_tail: str | None = None  # the worker log's end, for a run that did not finish ok

    @property
    def name(self) -> str:
        """The system as tables show it: `trl`, or `trl+liger` with train.kernels."""
        return self.system or self.framework

    @property
    def version(self) -> str | None:
        return self.framework_version or self.framework_version_requested


def to_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def parse(cls: type, data: Any, path: Path, version: str) -> Any:
    """`data` as record `cls`, or RecordError naming the file, the field and the version that wrote it."""
    if not isinstance(data, dict):
        raise RecordError(path, f"unreadable {path.name}: not a JSON object ({version})")
    try:
        return from_mapping(cls, data, path.stem)
    except SpecError as e:
        raise RecordError(path, f"{path.name}: {e} ({version})") from None


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(path, f"no {path.name} (did not finish)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise RecordError(path, f"unreadable {path.name}") from None


def write_worker(run_dir: Path, report: WorkerResult) -> None:
    results.write_json_atomic(run_dir / results.WORKER, to_dict(report))


def read_worker(run_dir: Path) -> WorkerResult | None:
    """The worker's report, or None when the worker died before writing one (or wrote half of one)."""
    try:
        data = _read(run_dir / results.WORKER)
    except RecordError:
        return None
    return parse(WorkerResult, data, run_dir / results.WORKER, "a worker of this harness")


def write_summary(run_dir: Path, summary: Summary) -> None:
    results.write_json_atomic(run_dir / results.SUMMARY, to_dict(summary) | {"format": FORMAT})


def read_summary(run_dir: Path) -> Summary:
    """A run's summary checked field by field; RecordError when it is missing, unreadable or mistyped."""
    path = run_dir / results.SUMMARY
    data = _read(path)
    fmt = data.get("format", 1) if isinstance(data, dict) else None
    if isinstance(fmt, int) and fmt > FORMAT:
        raise RecordError(path, f"{path.name}: format {fmt}, newer than this harness reads ({FORMAT}); update sftbench")
    commit = data.get("git_commit") if isinstance(data, dict) else None
    version = f"summary format {fmt}" + (f", harness {str(commit)[:12]}" if commit else "")
    if isinstance(data, dict):
        data = {"run": run_dir.name, **data}  # the oldest summaries did not name their run
        if data.get("hardware") == {}:
            data["hardware"] = None  # format 1 wrote {} for a worker that never reported its hardware
    return parse(Summary, data, path, version)


@dataclass
class Run:
    """One run directory, read once: its summary, the spec it ran, its per-step events and resource samples,
    and the worker's report (None where the worker never wrote one). Every number of the report, the gate and
    the exporter is computed from these."""

    dir: Path
    summary: Summary
    spec: dict[str, Any]
    events: list[Step]
    samples: list[Sample]
    worker: WorkerResult | None = None

    @property
    def name(self) -> str:
        return self.summary.run

    def generations(self, name: str) -> list[Generation]:
        """Its answers to the held-out prompts: `results.GENERATIONS` (trained) or `results.BASE_GENERATIONS`."""
        return read_lines(self.dir / name, Generation)


@dataclass
class Unreadable:
    run: str
    why: str


def load_run(run_dir: Path) -> Run:
    summary = read_summary(run_dir)
    return Run(run_dir, summary, results.read_json(run_dir / results.SPEC) or {},
               read_lines(run_dir / results.EVENTS, Step), read_lines(run_dir / results.SAMPLES, Sample),
               read_worker(run_dir))  # fmt: skip


def load_sweep(sweep_dir: Path) -> tuple[list[Run], list[Unreadable]]:
    """Every run of a sweep directory in run order; those without a usable summary as (run, why). A memory
    frontier's probe directories (their job directory holds frontier.json) are not runs of the sweep."""
    runs, unreadable = [], []
    for run_dir in results.run_dirs(sweep_dir):
        if not (run_dir / results.SUMMARY).exists() and (run_dir / results.FRONTIER).exists():
            continue
        try:
            runs.append(load_run(run_dir))
        except RecordError as e:
            unreadable.append(Unreadable(run_dir.name, e.why))
    return runs, unreadable
