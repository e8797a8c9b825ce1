"""The sweep entry point: `python -m bench.run [overrides]`.

Per run: compose config -> job spec -> framework environment -> worker (sampled, timed out) -> summary.json.
At the end of the sweep, a table of its runs. A failed run is recorded and the sweep goes on; input that
no run could use (unknown names, unreadable data) stops the sweep with one line naming the problem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bench.analysis import assess
from bench.core import config, record, results
from bench.core.config import Config
from bench.core.data import BUNDLED_MEDICAL, heldout_note, resolve_files
from bench.core.errors import SpecError, UserError
from bench.core.models import BUILT_ELSEWHERE, built_model_dir
from bench.core.paths import PACKAGE_DIR
from bench.core.spec import MAX_STEPS, STACK, DatasetSpec, JobSpec, ModelSpec, TrainSpec
from bench.sweep import envs, launch, published, selection, source
from bench.sweep.sampler import host_facts, host_has_gpu

REPO = PACKAGE_DIR.parent
DISK_LOW_BYTES = 64 << 10  # less free space than this after a failed run: the disk is why
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)  # logs: no wrap at 80 columns
SWEEP_SIZE = 0  # set when the sweep starts (same process with Hydra's basic launcher)
# bench.run's exit status when the sweep finished (its table and report written) but a run did not: failed,
# timed out or ran out of memory, or left no readable summary. 0: every run ok or skipped with its reason;
# 2: input no run could use; 130: interrupted.
RUNS_FAILED_EXIT = 3
NOT_FINISHED: dict[str, None] = {}  # the sweep's runs that did not finish ok or skipped, in order


def model_spec(cfg: Config) -> ModelSpec:
    m = cfg.model
    if m.source == "random" and m.path:
        # A built model lives only in the cache: building "at" a user's path would replace what is there.
        raise UserError(
            f"model={m.name} builds its model in the cache; model.path loads an existing one. Leave model.path "
            f"unset, or load your model with a pretrained preset: model=qwen2.5-0.5b model.path={m.path}"
        )
    if m.source == "random":
        path = str(built_model_dir(m.name, m.config, cfg.cache_path))
    elif not m.path:
        raise UserError(
            f"model={m.name}: no model to load; set model.path=<hub id or local directory>, e.g. "
            "model.path=Qwen/Qwen2.5-0.5B-Instruct"
        )
    elif Path(m.path).expanduser().exists():
        path = str(Path(m.path).expanduser().resolve())
    else:
        path = m.path
    return ModelSpec(m.name, m.source, path, m.config, m.trust_remote_code)


def hub_files(d: config.DatasetConfig) -> tuple[list[Path], list[Path]]:
    """Train and held-out files of a hub dataset, downloaded once into the Hugging Face cache."""
    from huggingface_hub import hf_hub_download

    def fetch(filename: str) -> Path:
        try:
            return Path(hf_hub_download(repo_id=d.hub_id, filename=filename, repo_type="dataset"))
        except Exception as e:  # offline, unknown repo or file: all end the same way for the user
            raise UserError(
                f"dataset={d.name}: cannot fetch {filename} from the hub dataset {d.hub_id} ({type(e).__name__}); "
                f"download it once and set dataset.path=<local copy> (huggingface-cli download {d.hub_id} "
                f"--repo-type dataset --local-dir data/{d.name}; see conf/dataset/{d.name}.yaml)"
            ) from None

    files = d.hub_files or {}
    if "train" not in files:
        raise UserError(
            f"dataset={d.name}: dataset.hub_files needs a `train` file: set "
            "dataset.hub_files.train=<file in the hub dataset>"
        )
    return [fetch(files["train"])], [fetch(files["eval"])] if files.get("eval") else []


def source_files(d: config.DatasetConfig) -> tuple[list[Path], list[Path]]:
    """The dataset's training and held-out files: a local path (file or directory), or the hub's."""
    if not d.path and d.hub_id:
        return hub_files(d)
    path = d.path or BUNDLED_MEDICAL
    train = resolve_files(path, d.train_glob)
    if d.eval_path:
        return train, resolve_files(d.eval_path, d.eval_glob)
    return train, resolve_files(path, d.eval_glob) if Path(path).is_dir() else []


def select_rows(cfg: Config) -> tuple[DatasetSpec, selection.Selection]:
    """The rows the job trains and is evaluated on, selected once per source content and settings (from the
    cache on later runs), and the dataset spec that names them; the selection's counts are the summary's."""
    d = cfg.dataset
    if d.max_rows is not None and d.max_rows <= 0:
        raise SpecError(f"dataset.max_rows={d.max_rows}: must be > 0 (or null: every usable row)")
    train, heldout = source_files(d)
    settings = selection.Settings(d.max_rows, d.shuffle_seed, d.on_bad_row, d.max_row_bytes)
    picked = selection.select(cfg.cache_path / "data", train, heldout, settings)
    spec = DatasetSpec(
        name=d.name,
        train_file=str(picked.train_file),
        eval_file=str(picked.eval_file) if picked.eval_file else None,
        selection_sha256=picked.sha256,
        source_files=tuple(map(str, train)),
        eval_source_files=tuple(map(str, heldout)),
        source_sha256=tuple(picked.source_sha256),
        system_prompt=d.system_prompt,
        prompt_format=d.prompt_format,
        eos=d.eos,
        max_rows=d.max_rows,
        on_bad_row=d.on_bad_row,
        shuffle_seed=d.shuffle_seed,
        max_row_bytes=d.max_row_bytes,
        tokenize=d.tokenize,
        fill_to=d.fill_to,
    )
    return spec, picked


def train_steps(t: TrainSpec, rows: int) -> TrainSpec:
    """The step count every framework stops at: train.max_steps, or train.epochs turned into steps once,
    here, over the `rows` usable training rows: ceil(epochs x rows / global batch). Frameworks round an
    epoch's steps each their own way; given max_steps, each stops at the same step."""
    if (t.max_steps is None) == (t.epochs is None):
        fix = ("to train for max_steps, add train.epochs=null; to train by epochs, train.max_steps=null"
               if t.epochs is not None else "set train.max_steps=N, or train.epochs=E")  # fmt: skip
        raise SpecError(f"train.epochs={t.epochs} and train.max_steps={t.max_steps}: exactly one is set; {fix}")
    if t.epochs is None:
        return t
    if not (math.isfinite(t.epochs) and t.epochs > 0):  # checked before anything computes with it
        raise SpecError(f"train.epochs={t.epochs}: must be a finite number > 0")
    if t.packing == "packed":
        raise SpecError("train.epochs with train.packing=packed: the framework decides how many packed rows an "
                        "epoch has; set train.max_steps=N (and train.epochs=null) instead, or train.packing=none to "
                        "keep training by epochs")  # fmt: skip
    steps = max(1, math.ceil(t.epochs * rows / global_batch(t)))
    if steps > MAX_STEPS:
        shown = f"{steps:,}" if steps < 1e12 else f"{float(steps):.3g}"
        raise SpecError(f"train.epochs={t.epochs:g}: {shown} steps over {rows:,} rows at global batch "
                        f"{global_batch(t)}, more than {MAX_STEPS:,}; set fewer epochs")  # fmt: skip
    return dataclasses.replace(t, max_steps=steps)


def global_batch(t: TrainSpec) -> int:
    return t.batch_size * t.grad_accum * t.num_gpus


def job_spec(cfg: Config, run_dir: Path, first_run: bool = True) -> JobSpec:
    """The framework-neutral job spec of one run, validated (job_and_rows)."""
    return job_and_rows(cfg, run_dir, first_run)[0]


def job_and_rows(cfg: Config, run_dir: Path, first_run: bool = True) -> tuple[JobSpec, selection.Selection]:
    """The job spec of one run, validated, and the selection of rows it trains on. The base model is the same
    for every run: evaluated once, in the sweep's first run."""
    fw = cfg.framework
    dataset, picked = select_rows(cfg)
    train, _ = published.as_published(cfg, cfg.train, host_has_gpu())
    spec = JobSpec(
        framework=fw.name,
        framework_version=fw.version,
        runner=fw.runner,
        packages=(fw.distribution, *fw.packages),
        model=model_spec(cfg),
        dataset=dataset,
        train=train_steps(train, picked.train.kept),
        eval=dataclasses.replace(cfg.eval, base=first_run),
        skip_steps=cfg.skip_steps,
        run_dir=str(run_dir.resolve()),
        profile=cfg.profile,
        token_metrics=fw.token_metrics,
    ).validate()
    return spec, picked


def steps_note(spec: JobSpec, rows: int) -> list[str]:
    t = spec.train
    if t.epochs is None:
        return []
    return [f"train.epochs={t.epochs:g}: {t.max_steps} steps over {rows} rows (global batch {global_batch(t)})"]


def hydra_job_num() -> int:
    return HydraConfig.get().job.num if HydraConfig.initialized() else 0


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def framework_requirements(
    fw: config.FrameworkConfig | DictConfig, worker: list[str] = (), kernels: str = "none"
) -> list[str]:
    """The framework's requirements, the companion pins of its release, what the job's train.kernels needs
    and the harness's worker needs."""
    companions = fw.companions or {}
    release = companions.get(str(fw.version), companions.get("default", []))
    kernel = (fw.get("kernel_requirements") if isinstance(fw, DictConfig) else fw.kernel_requirements) or {}
    return [*fw.requirements, *release, *kernel.get(kernels, []), *worker]


@contextlib.contextmanager
def build_status(title: str):
    """Live progress of a one-time build, fed its output lines: on a terminal, a spinner with the current step
    (the package being downloaded or installed) and the elapsed time; in a log, a plain line every 10 s at most."""
    if not console.is_terminal:
        yield envs.BuildProgress(lambda text: console.print(f"{title}: {text}", markup=False), live=False)
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(title)
        yield envs.BuildProgress(lambda text: progress.update(task, description=f"{title}: {text[:100]}"), live=True)


def framework_source(cfg: Config) -> source.Source | None:
    """framework.source resolved and identified (one line when it cannot be), or None for the release."""
    fw = cfg.framework
    return source.resolve(fw.source, fw.distribution, cfg.cache_path) if fw.source else None


def framework_env(cfg: Config, src: source.Source | None = None) -> tuple[Path, list[str], dict[str, str] | None]:
    """Where the framework's environment is built, from which requirements, and the version it must hold
    (None with a source, which says which version it is). With a source, the environment installs it in
    place of the release and is keyed by its identity."""
    fw = cfg.framework
    requirements = key = framework_requirements(fw, cfg.worker_requirements, cfg.train.kernels)
    label, expect = fw.version, {fw.distribution: fw.version}
    if src is not None:
        requirements, key = source.requirements(requirements, fw.distribution, src)
        label, expect = f"source-{src.label}", None
    return envs.env_dir(cfg.cache_path, fw.name, label, key), requirements, expect


def framework_python(cfg: Config, src: source.Source | None = None) -> tuple[Path, dict[str, float]]:
    """The framework's interpreter, and the one-time cost of getting it: `env_build_s` and `env_size_mb` when
    this run built the environment, `env_check_s` when it only checked one already built (framework_env). A
    source's environment is built over a copy of the release's (envs.Layer), which is built first if needed
    (its build time counted in `env_build_s`); where the release's cannot be built, it is built fresh."""
    fw = cfg.framework
    if fw.python:
        return envs.check_python(fw.python), {}
    env, requirements, expect = framework_env(cfg, src)
    layer, base_cost = None, {}
    if src is not None and not (env / envs.COMPLETE).exists():
        try:
            _, base_cost = framework_python(cfg)
            layer = envs.Layer(framework_env(cfg)[0], fw.distribution)
        except envs.EnvError as e:
            console.print(f"the {fw.name} {fw.version} environment, the base of source builds, could not be built "
                          f"({str(e).splitlines()[0]}); building the source's environment from scratch", markup=False)
    title = f"{fw.name} {fw.version if src is None else '@ ' + src.label} environment"
    if not (env / envs.COMPLETE).exists():
        free_gb = shutil.disk_usage(next(p for p in (env, *env.parents) if p.exists())).free / 2**30
        console.print(f"building the {title} (first use; its size is reported when done) into {env} "
                      f"({free_gb:,.0f} GB free there; log: {envs.build_log(env)})", markup=False)  # fmt: skip
    start = time.perf_counter()
    with build_status(title) as progress:
        python, build_s = envs.ensure_env(env, requirements, progress, expect=expect, notice=console.print,
                                          layer=layer)  # fmt: skip
    if build_s is None:
        return python, {"env_check_s": time.perf_counter() - start}
    size_mb = envs.dir_size_mb(env)
    over = f" over a copy of {layer.base.name}" if layer else ""
    console.print(f"built the {title}{over} in {build_s:.0f} s: {size_mb / 1024:.1f} GB at {env}", markup=False)
    return python, {"env_build_s": build_s + base_cost.get("env_build_s", 0.0), "env_size_mb": size_mb}


def build_model(spec: JobSpec, python: Path, env: dict[str, str]) -> dict[str, float]:
    """Build a local model preset (model=tiny, *-arch) before the run starts, in the framework's environment,
    so the one-time build is timed apart from the run (`model_build_s`); {} when it is already built."""
    path = Path(spec.model.path)
    if spec.model.source != "random" or (path / ".complete").exists():
        return {}
    title = f"model {spec.model.name}"
    log_path = path.with_name(path.name + ".build.log")
    path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"building {title} (first use) into {path} (log: {log_path})", markup=False)
    start = time.perf_counter()
    cmd = [str(python), "bench.core.models", str(path), json.dumps(spec.model.config)]
    with open(log_path, "w", encoding="utf-8", buffering=1) as log, build_status(title) as progress:
        envs.run_step(cmd, log, progress, env, f"building {title}")
    build_s = time.perf_counter() - start
    if BUILT_ELSEWHERE in log_path.read_text(encoding="utf-8", errors="replace"):
        console.print(f"{title} was built by another process while this sweep waited {build_s:.0f} s", markup=False)
        return {"model_wait_s": build_s}  # another process paid the build; this run only waited for it
    console.print(f"built {title} in {build_s:.0f} s", markup=False)
    return {"model_build_s": build_s}


def option_reason(fw: config.FrameworkConfig) -> str | None:
    """Why the framework refuses an option asked of it: framework.token_metrics where it has no such metrics
    (its conf file declares token_metrics: null)."""
    declared = config.frameworks().get(fw.name, {}).get("token_metrics")
    if fw.token_metrics is not None and declared is None:
        return (f"framework.token_metrics={str(fw.token_metrics).lower()}: {fw.name} has no per-token training "
                f"metrics to switch ({fw.token_metrics_note}); the option is TRL's (entropy and mean token accuracy "
                "on every step)")  # fmt: skip
    return None


def host_reason(fw: config.FrameworkConfig, spec: JobSpec) -> str | None:
    """Why this host cannot run the job at all, from the framework's declared facts (before any build)."""
    if spec.train.num_gpus > 1 and not fw.multi_gpu:
        return (
            f"train.num_gpus={spec.train.num_gpus}: the harness runs {fw.name} on one GPU "
            "(framework.multi_gpu); run it with train.num_gpus=1"
        )
    if fw.needs_gpu and not host_has_gpu():
        return f"{fw.name} requires an NVIDIA/AMD/Intel GPU; none found on this host"
    if spec.train.kernels != "none" and not host_has_gpu():  # decided before building an env with them
        return f"train.kernels={spec.train.kernels}: GPU kernels (Triton/CUDA); no GPU found on this host"
    for name, (_, unusable, _) in published.GPU_ONLY.items():
        if unusable(spec.train) and not host_has_gpu():
            return f"train.{name}={getattr(spec.train, name)}: bitsandbytes needs a CUDA GPU; none found on this host"
    return None


def finished_ok(run_dir: Path, spec: JobSpec, src: source.Source | None = None) -> record.Summary | None:
    """The run's summary when a previous attempt finished this very job ok (for resume): same framework,
    requested version and source, same job key and seed. An earlier run of other settings is run again."""
    try:
        prior = record.read_summary(run_dir)
    except record.RecordError:
        return None
    if prior.status != "ok":
        return None
    same = (prior.framework, prior.framework_version_requested, prior.job_key, prior.seed,
            (prior.source or {}).get("identity"))  # fmt: skip
    if same != (spec.framework, spec.framework_version, spec.job_key(), spec.train.seed, src and src.identity):
        console.print(f"[yellow]{run_dir.name}[/]: the earlier run there was another job; running this one")
        return None
    return prior


def scrub_multirun(sweep_dir: Path) -> None:
    """Hydra's record of the sweep (multirun.yaml, written as it started) holds the overrides as typed: secrets
    scrubbed there too. The runs' own records are the harness's (write_hydra_records), scrubbed as written."""
    path = sweep_dir / "multirun.yaml"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if results.redact(text) != text:
            results.write_text_atomic(path, text)


def write_hydra_records(raw: DictConfig, hc: DictConfig, run_dir: Path) -> None:
    """The run's config, Hydra's config and the overrides in `.hydra/`, as Hydra would write them, but by the
    harness (hydra.output_subdir is null): atomically and scrubbed, so a full or read-only disk is this run's
    one-line failure rather than Hydra's traceback, and no secret or empty file is left there. `hc`: the
    run's Hydra config (HydraConfig.get())."""
    records = {"config.yaml": raw, "hydra.yaml": OmegaConf.create({"hydra": hc}), "overrides.yaml": hc.overrides.task}
    try:
        (run_dir / ".hydra").mkdir(exist_ok=True)
    except OSError as e:
        raise (results.cannot_write(e, run_dir / ".hydra") or e) from None
    for name, node in records.items():
        results.write_text_atomic(run_dir / ".hydra" / name, OmegaConf.to_yaml(node))


class RunEnded(Exception):
    """A run that ended before its worker could report (skipped, or its environment or model not built)."""

    def __init__(self, status: str, reason: str, log_tail: str | None = None):
        super().__init__(reason)
        self.status, self.reason, self.log_tail = status, reason, log_tail


def execute(raw: DictConfig, run_dir: Path, lock_fd: int | None = None) -> record.Summary:
    """One run, start to summary. Never raises for a run that fails: the failure is its result. `lock_fd`:
    the run directory's lock, which the worker inherits."""
    cfg = config.validate(raw)
    results.register_secrets(cfg.framework.env)
    scrub_multirun(run_dir.parent)
    if HydraConfig.initialized():
        write_hydra_records(raw, HydraConfig.get(), run_dir)
    src = framework_source(cfg)  # a source that cannot be used stops the sweep here, before anything is built
    # Bad rows stop the sweep here, before this run starts; a later run finds the selection in the cache.
    spec, picked = job_and_rows(cfg, run_dir, first_run=hydra_job_num() == 0)
    results.clear_run(run_dir)  # a rerun in the same directory starts from nothing
    results.write_text_atomic(run_dir / results.SPEC, spec.to_json())
    results.write_text_atomic(run_dir / results.CONFIG, OmegaConf.to_yaml(raw, resolve=True))
    out = started(cfg, spec, src, run_dir, picked.train.kept)
    try:
        if reason := option_reason(cfg.framework) or host_reason(cfg.framework, spec):
            raise RunEnded("skipped", reason)
        python, env, one_time = prepare(cfg, spec, src)
    except RunEnded as e:
        return dataclasses.replace(out, status=e.status, reason=e.reason, log_tail=e.log_tail)
    columns = [TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with launch.interruptible(), Progress(*columns, console=console, transient=True) as progress:
        outcome = launch.launch(
            python, run_dir, env, cfg.timeout_s, cfg.sampler, spec.train.max_steps, progress, spec.train.num_gpus,
            lock_fd,
        )
    out.ended_at, out.python = time.time(), str(python)
    out.host = record.Host(**host_facts(cfg.sampler.gpu))  # CPU model, cores, RAM, GPU models and driver, read here
    # Environment and model builds, and the data selection: paid before the run, outside its wall_s.
    out.metrics = one_time | {"data_prepare_s": picked.seconds}
    return finished(out, spec, src, outcome, picked, steps_note(spec, picked.train.kept))


def started(cfg: Config, spec: JobSpec, src: source.Source | None, run_dir: Path, rows: int) -> record.Summary:
    """What the summary knows before anything is built: the job, the system asked for, where it came from, and
    for a replayed published run every way it differs from the publication."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    overrides = list(hydra.overrides.task) if hydra else []
    scenario = hydra.runtime.choices.get("scenario") if hydra else None
    gpus = (host_facts().get("gpus") or ["an unnamed GPU"]) if cfg.published and host_has_gpu() else []
    return record.Summary(
        run=run_dir.name,
        status="failed",  # until the run says otherwise
        job_key=spec.job_key(),
        seed=spec.train.seed,
        started_at=time.time(),
        framework=spec.framework,
        system=spec.system(),
        framework_version_requested=spec.framework_version,
        source=src.record() if src else None,
        overrides=overrides,
        # The preset the run started from (conf/scenario/), for the report's header; never part of the job key,
        # which already covers every value the scenario set.
        scenario=scenario,
        published=published.record(cfg, scenario, spec.dataset, rows, overrides, gpus),
        claims=[dataclasses.asdict(c) for c in cfg.claims],  # what the scenario's source claims, to check
        git_commit=git_commit(),
        sampler=record.SamplerInfo(interval_s=cfg.sampler.interval_s),
    )


def prepare(cfg: Config, spec: JobSpec, src: source.Source | None) -> tuple[Path, dict[str, str], dict[str, float]]:
    """The framework's interpreter, the worker's environment and the one-time costs of getting them (paid before
    the run, outside its wall_s). RunEnded when the environment or the model cannot be built or is stopped."""
    what = "environment"
    try:
        with launch.interruptible():
            python, one_time = framework_python(cfg, src)
            env = launch.worker_env(launch.worker_pythonpath(cfg.cache_path), cfg.framework.env)
            what = "model"
            one_time |= build_model(spec, python, env)
    except envs.EnvError as e:
        raise RunEnded("failed", f"{what}: {e}".splitlines()[0], str(e)) from None
    except KeyboardInterrupt as e:
        raise RunEnded("interrupted", f"interrupted ({launch.interrupt_cause(e)}) while building the {what} (its "
                       "build stopped; it is rebuilt on next use)") from None  # fmt: skip
    return python, env, one_time


def finished(out: record.Summary, spec: JobSpec, src: source.Source | None, outcome: launch.Outcome,
             picked: selection.Selection, notes: list[str]) -> record.Summary:  # fmt: skip
    """The summary of a run whose worker ended: its status, and what the worker, the parent and the sampler saw."""
    run_dir = Path(spec.run_dir)
    try:
        worker = record.read_worker(run_dir)  # None when the worker died before reporting
    except record.RecordError as e:  # a report the parent cannot read is no report
        worker, notes = None, [*notes, str(e)]
    try:
        events = record.read_lines(run_dir / results.EVENTS, record.Step)
        samples = record.read_lines(run_dir / results.SAMPLES, record.Sample)
    except record.RecordError as e:  # the run is recorded all the same, with what made its steps unreadable
        events, samples, notes = [], [], [*notes, str(e)]
    out.status, reason = assess.final_status(worker, outcome, events)
    worker = worker or record.WorkerResult(out.status)
    out.metrics = assess.metrics(events, samples, worker, outcome, spec.skip_steps,
                                  spec.train.batch_size * spec.train.grad_accum, spec.eval.target_loss) | out.metrics
    out.metrics["parent_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.reason = failure_context(assess.killed_hint(reason, out.metrics.get("peak_rss_mb"), outcome.memory_limit_mb),
                                 out.status, run_dir)  # fmt: skip
    out.versions = worker.versions or envs.installed_versions(Path(out.python), (*spec.packages, *STACK))
    out.framework_version = out.versions.get(spec.packages[0])  # what really ran
    if src is not None and out.framework_version:  # a source is its own system: `trl 1.16.0 @ 3f2a1c9`
        out.framework_version = f"{out.framework_version} @ {src.label}"
    out.hardware, out.quality, out.base_quality = worker.hardware, worker.quality, worker.base_quality
    out.effective = record.Effective(worker.precision, worker.gradient_checkpointing, worker.train_examples,
                                     worker.tokenize, spec.train.max_steps)  # fmt: skip
    # What selecting the rows did (the selection's counts) and what the framework did with them (the worker's).
    out.data = dataclasses.replace(worker.data, **dataclasses.asdict(picked.train), heldout=picked.heldout,
                                   selection_sha256=picked.sha256)  # fmt: skip
    out.fingerprint = worker.fingerprint
    # Where a framework does not follow the spec to the letter, and what else a reader must know.
    warnings = [outcome.sampler.error, picked.heldout and heldout_note(dataclasses.asdict(picked.heldout))]
    out.notes = [*notes, *worker.notes, *filter(None, warnings)]
    out.sampler.baseline_used_mb = outcome.sampler.baseline_used_mb
    out.log_tail = outcome.log_tail if out.status != "ok" else None
    return out


def failure_context(reason: str, status: str, run_dir: Path) -> str:
    """The reason, with what the run's own files cannot say: its directory deleted, or its disk full."""
    if not run_dir.is_dir():
        return f"its run directory {run_dir} was deleted while it ran; {reason}"
    if status != "ok" and shutil.disk_usage(run_dir).free < DISK_LOW_BYTES:
        return f"no space left on {results.mount_point(run_dir)} (the worker could not write its results); {reason}"
    return reason


HYDRA_ONLY = {".hydra", results.LOCK}  # what a run dir holds before its run starts: its records, its lock


def discard_if_untouched(run_dir: Path) -> None:
    """A command rejected before its first run leaves no sweep behind: remove the run and sweep directories
    this sweep created when they hold nothing but Hydra's own records (never an earlier sweep's runs)."""
    sweep_dir = run_dir.parent
    if {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY and {p.name for p in sweep_dir.iterdir()} <= {
        run_dir.name,
        "multirun.yaml",
    }:
        shutil.rmtree(run_dir)
        (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
        sweep_dir.rmdir()


def run_job(cfg: DictConfig) -> str:
    """One run of the sweep (Hydra's task function)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        with results.run_lock(run_dir) as lock_fd:
            typed = config.validate(cfg) if cfg.resume else None
            if typed and (prior := finished_ok(run_dir, job_spec(typed, run_dir), framework_source(typed))):
                console.print(f"run {hc.job.num + 1}: {prior.framework} ok in an earlier attempt, kept ({run_dir})")
                return "ok"
            out = execute(cfg, run_dir, lock_fd)
            if not run_dir.is_dir():  # deleted under the run: its failure alone, the sweep goes on
                console.print(f"[red]run {hc.job.num + 1}:[/] {run_dir} was deleted while it ran; its results are "
                              "lost, the sweep goes on", soft_wrap=True)  # fmt: skip
                NOT_FINISHED[run_dir.name] = None
                return "failed"
            record.write_summary(run_dir, out)
    except UserError as e:  # SpecError and DataError included
        console.print(f"[red]error:[/] {results.redact(str(e))}", soft_wrap=True)  # one line, however long
        if hc.job.num == 0:
            discard_if_untouched(run_dir)
        else:  # the runs before this one keep their table and, where the disk allows, their report
            finish_sweep(run_dir.parent, cfg.report.baseline)
        sys.exit(2)  # SystemExit passes through Hydra's launcher: the sweep stops, no traceback
    if out.status == "interrupted":
        console.print(f"[red]interrupted:[/] {run_dir} recorded as interrupted; finished runs are intact")
        sys.exit(130)  # the sweep stops here, without a traceback
    style = assess.STYLES.get(out.status, "red")
    of = f"/{SWEEP_SIZE}" if SWEEP_SIZE else ""
    console.print(
        f"run {hc.job.num + 1}{of}: {out.framework} "
        # framework.env values are the worker's environment (tokens, private paths): named, never shown
        + " ".join(o.partition("=")[0] + "=***" if "=" in o and o.lstrip("+~").startswith("framework.env") else o
                   for o in hc.overrides.task)  # fmt: skip
        + f" [{style}]{out.status}[/] {results.redact(out.reason)}"  # the run's own error line: scrubbed
    )
    return out.status


def sweep_size(cfg: DictConfig) -> int:
    """How many runs the sweep's overrides (command line over hydra.sweeper.params) expand to."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    counts: dict[str, int] = {}
    for o in OverridesParser.create().parse_overrides([*params, *cfg.hydra.overrides.task]):
        counts[o.get_key_element()] = len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
    return math.prod(counts.values())


# The sweep directory's resolvers, before Hydra composes anything: here, because launchers that run jobs in
# other processes (submitit) compose each job's config after importing this module to unpickle run_job.
config.register_resolvers()

# Hydra's entry point. The task function stays importable as bench.sweep.app.run_job, so launchers that pickle it
# (submitit) send a reference rather than the module's state.
sweep = hydra.main(version_base="1.3", config_path=str(config.conf_dir()), config_name="config")(run_job)


def unknown_choice(argv: list[str]) -> str | None:
    """A config group choice on the command line that no conf file provides (`scenario=nope`), named with
    the choices there are; None when every one exists. Hydra would say so too, in a dozen lines."""
    roots = [config.conf_dir()]
    for arg in argv:
        if arg.startswith("hydra.searchpath="):
            roots += [Path(p) for p in re.findall(r"file://([^,\]]+)", arg)]
    for arg in argv:
        group, _, value = arg.partition("=")
        dirs = [root / group for root in roots if group.isidentifier() and (root / group).is_dir()]
        if not dirs or not value or any(c in value for c in "()[]{}*$"):  # sweeps like choice(...) are Hydra's
            continue
        known = sorted({p.stem for d in dirs for p in d.glob("*.yaml")})
        missing = [v for v in value.split(",") if v not in known]
        if missing:
            return f"{group}={missing[0]}: no such {group}; choose from {', '.join(known)} (conf/{group}/)"
    return None


def scenario_framework(name: str) -> str | None:
    """The framework a scenario sets (a published run of one framework), or None."""
    path = config.conf_dir() / "scenario" / f"{name}.yaml"
    if not path.is_file():
        return None
    for entry in OmegaConf.load(path).get("defaults") or []:
        if isinstance(entry, DictConfig) and "override /framework" in entry:
            return str(entry["override /framework"])
    return None


def pinned_frameworks(argv: list[str]) -> list[str]:
    """The sweep's arguments with the default framework sweep left out when every scenario asked for sets its
    own framework (scenario=seed-trl,seed-llamafactory: one run each, not one per framework)."""
    values = [a.partition("=")[2] for a in argv if a.startswith("scenario=")]
    if not values or any(a.startswith(("framework=", "+framework=")) for a in argv):
        return argv
    names = [v for value in values for v in value.split(",")]
    pinned = {name: scenario_framework(name) for name in names}
    if all(pinned.values()):
        return [*argv, "~hydra.sweeper.params.framework"]
    if any(pinned.values()):
        own = ", ".join(n for n, fw in pinned.items() if fw)
        raise UserError(f"scenario={','.join(names)}: {own} set their framework, the others do not; sweep them apart")
    return argv


def results_problem(argv: list[str]) -> str | None:
    """Where the sweep would write, checked before Hydra writes anything there (its own records included):
    a read-only or full file system is one line, not Hydra's traceback."""
    if any(a.startswith("-") for a in argv):  # --help, --cfg, --info: Hydra writes nothing
        return None
    given = dict(a.split("=", 1) for a in argv if a.startswith(("results_dir=", "hydra.sweep.dir=")))
    target = given.get("hydra.sweep.dir") or given.get("results_dir")
    if target is None:
        target = OmegaConf.load(config.conf_dir() / "config.yaml").results_dir
    if "$" in target or "," in target:  # an interpolation or a sweep over directories: Hydra resolves it
        return None
    problem = results.unwritable(Path(target), DISK_LOW_BYTES)
    return f"{target}: {problem}" if problem else None


def resumed(argv: list[str]) -> list[str]:
    """`resume=true hydra.sweep.dir=DIR`: the overrides DIR's sweep started with (Hydra's multirun.yaml), so a
    resume reruns that sweep's own jobs; any other override is refused rather than mixed in."""
    if not any(a.startswith("resume=") and a.split("=", 1)[1].lower() == "true" for a in argv):
        return argv
    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.sweep.dir=")]
    if not given:
        raise UserError("resume=true reruns an earlier sweep: name it with hydra.sweep.dir=results/<sweep>")
    sweep_dir = Path(given[-1]).expanduser()
    if not (sweep_dir / "multirun.yaml").is_file():
        raise UserError(f"{sweep_dir}: not a sweep directory (no multirun.yaml, which bench.run writes as a sweep "
                        "starts); resume=true takes the directory of a sweep, e.g. results/<sweep>")  # fmt: skip
    extra = [a for a in argv if not a.startswith(("resume=", "hydra.sweep.dir="))]
    recorded = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides
    task = [o for o in recorded.task if not o.startswith("resume=")]
    if extra:
        raise UserError(f"resume=true reruns {sweep_dir}'s own runs, with the overrides it started with "
                        f"({' '.join(task) or 'none'}); {extra[0]} would mix another job into it: drop it, or start "
                        "a new sweep with it (without resume=true)")  # fmt: skip
    if scrubbed := [o.partition("=")[0] for o in task if "***" in o]:
        raise UserError(f"{sweep_dir}: {scrubbed[0]} held a secret, scrubbed from its multirun.yaml, so resume "
                        f"cannot restore it; set it as an environment variable the config reads "
                        "(${oc.env:NAME}) and start a new sweep")  # fmt: skip
    older = [(r.summary.run, r.summary.format) for r in record.load_sweep(sweep_dir)[0]
             if r.summary.format < record.FORMAT]  # fmt: skip
    if older:
        raise UserError(f"{sweep_dir}: {older[0][0]} was written by an older harness (summary format {older[0][1]}, "
                        f"this one writes {record.FORMAT}), whose jobs cannot be matched to this version's; start a "
                        "new sweep with the same overrides (nothing there was changed)")  # fmt: skip
    # pinned_frameworks recomputes its own override; the directory is the one given
    own = [o for o in recorded.hydra if not o.startswith(("hydra.sweep.dir=", "~hydra.sweeper.params.framework"))]
    return [*task, *own, "resume=true", f"hydra.sweep.dir={sweep_dir}"]


# A URL's user information (user@, user:password@, token@) anywhere but a plain SSH user (ssh://git@host)
URL_CREDENTIALS = re.compile(r"\b([a-z][a-z0-9+.-]*)://([^\s/@]+)@", re.IGNORECASE)


def credentials_in(argv: list[str]) -> str | None:
    """An override carrying a URL with credentials, refused before Hydra writes the overrides anywhere: one line
    naming the safe way, the credentials shown as ***."""
    for arg in argv:
        for m in URL_CREDENTIALS.finditer(arg):
            scheme, userinfo = m.group(1).lower(), m.group(2)
            if scheme.endswith("ssh") and ":" not in userinfo:
                continue  # an SSH login name (git@), not a secret
            shown = arg.replace(m.group(0), f"{m.group(1)}://***@")
            plain = arg.partition("=")[2].replace(m.group(0), f"{m.group(1)}://")
            return (f"{shown}: a URL with credentials would be written into the sweep's records and logs; give them to "
                    f"git instead (a credential helper: git config --global credential.helper store, or your CI's; or "
                    f"~/.netrc) and pass the URL without them: {plain}")  # fmt: skip
    return None


def open_env(argv: list[str]) -> list[str]:
    """`framework.env.NAME=value` adds NAME or sets it, whether or not the framework's conf lists it (Hydra's
    `++`): a framework's environment is an open mapping, and Hydra's refusal would print the value."""
    return [f"++{a}" if a.startswith("framework.env.") else a for a in argv]


def main() -> None:
    try:  # the command line checked and completed before Hydra writes anything
        if problem := credentials_in(sys.argv[1:]) or results_problem(sys.argv[1:]):
            raise UserError(problem)
        argv = open_env(resumed(sys.argv[1:]))
        if problem := unknown_choice(argv):
            raise UserError(problem)
        sys.argv[1:] = pinned_frameworks(argv)
    except UserError as e:
        console.print(f"[red]error:[/] {results.redact(str(e))}", soft_wrap=True)  # one line, however long
        sys.exit(2)
    sweep()
    if NOT_FINISHED:
        console.print(f"[red]{len(NOT_FINISHED)} run(s) did not finish ok:[/] {', '.join(NOT_FINISHED)} (exit "
                      f"{RUNS_FAILED_EXIT}; the table and report above include them)", soft_wrap=True)  # fmt: skip
        sys.exit(RUNS_FAILED_EXIT)


class SweepTable(Callback):
    """Counts the sweep's runs at its start; prints them side by side once every run has finished."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:  # noqa: A002 (Hydra's name)
        global SWEEP_SIZE
        SWEEP_SIZE = sweep_size(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:  # noqa: A002
        finish_sweep(Path(config.hydra.sweep.dir), config.report.baseline)


def finish_sweep(sweep_dir: Path, baseline: str) -> None:
    """The sweep's table of runs, its findings and report (at its end, or when it stops on an error)."""
    out = Console(width=None if sys.stdout.isatty() else 160)
    runs, unreadable = record.load_sweep(sweep_dir)  # a run without a readable summary: in the report
    NOT_FINISHED.update((r.summary.run, None) for r in runs if r.summary.status not in ("ok", "skipped"))
    NOT_FINISHED.update((u.run, None) for u in unreadable)
    out.print(assess.sweep_table(runs, title=f"sweep {sweep_dir}"))
    try:
        from bench.analysis import report  # pandas and matplotlib: loaded only now, after the runs

        built = report.compose(sweep_dir, baseline=baseline)
        paths = report.write(built, sweep_dir)
        out.print(report.findings_block(built), markup=False, highlight=False)  # reasons may hold [brackets]
        out.print(f"report: {paths['report.html']}  (rebuild: python -m bench.report {sweep_dir})")
    except Exception as e:  # the runs are recorded; a report can be rebuilt from them
        console.print(f"[yellow]report not built:[/] {type(e).__name__}: {e}")
