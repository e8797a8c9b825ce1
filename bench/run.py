"""The sweep entry point: `python -m bench.run [overrides]`.

Per run: compose config -> job spec -> framework environment -> worker (sampled, timed out) -> summary.json.
At the end of the sweep, a table of its runs. A failed run is recorded and the sweep goes on; input that
no run could use (unknown names, unreadable data) stops the sweep with one line naming the problem.
"""

from __future__ import annotations

import math
import os
import re
import resource
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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import envs, launch, results, runners, summary
from bench.data import BUNDLED_MEDICAL, DataError, load_examples, resolve_files
from bench.models import built_model_dir
from bench.spec import DataSpec, EvalSpec, JobSpec, ModelSpec, SpecError, TrainSpec, from_mapping

REPO = Path(__file__).resolve().parent.parent
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)  # logs: no wrap at 80 columns
SWEEP_SIZE = 0  # set when the sweep starts (same process with Hydra's basic launcher)


def safe_name(value: str) -> str:
    """A path component from a config value: no separators, no leading dots (no `framework.name=../x`)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(value)).lstrip(".") or "_"


# Resolvers for the sweep directory layout in conf/config.yaml.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)  # one value per sweep
OmegaConf.register_new_resolver("safe", safe_name, replace=True)


class UserError(Exception):
    """Bad input from the user: reported as one line, no traceback."""


def model_spec(cfg: DictConfig, cache_dir: Path) -> ModelSpec:
    m = OmegaConf.to_container(cfg.model, resolve=True)
    if m["source"] == "random":
        m["path"] = m["path"] or str(built_model_dir(m["name"], m["config"], cache_dir))
    elif not m["path"]:
        raise UserError(f"model={m['name']}: set model.path to a hub id or a local directory")
    elif Path(m["path"]).expanduser().exists():
        m["path"] = str(Path(m["path"]).expanduser().resolve())
    return from_mapping(ModelSpec, m, "model")


def hub_files(d: DictConfig) -> tuple[list[Path], list[Path]]:
    """Train and held-out files of a hub dataset, downloaded once into the Hugging Face cache."""
    from huggingface_hub import hf_hub_download

    def fetch(filename: str) -> Path:
        try:
            return Path(hf_hub_download(repo_id=d.hub_id, filename=filename, repo_type="dataset"))
        except Exception as e:  # offline, unknown repo or file: all end the same way for the user
            raise UserError(
                f"dataset={d.name}: cannot fetch {filename} from the hub dataset {d.hub_id} ({type(e).__name__}); "
                f"download it once and set dataset.path to the local copy (see conf/dataset/{d.name}.yaml)"
            ) from None

    return [fetch(d.hub_files.train)], [fetch(d.hub_files.eval)] if d.hub_files.get("eval") else []


def data_spec(cfg: DictConfig) -> DataSpec:
    d = cfg.dataset
    if not d.path and d.get("hub_id"):
        train, held_out = hub_files(d)
    else:
        path = d.path or BUNDLED_MEDICAL
        train = resolve_files(path, d.train_glob)
        if d.eval_path:
            held_out = resolve_files(d.eval_path, d.eval_glob)
        elif Path(path).is_dir():
            held_out = resolve_files(path, d.eval_glob)
        else:
            held_out = []
    return DataSpec(
        name=d.name,
        train_files=tuple(map(str, train)),
        eval_files=tuple(map(str, held_out)),
        system_prompt=d.system_prompt,
        max_rows=d.max_rows,
        tokenize=d.tokenize,
        on_bad_row=d.on_bad_row,
        shuffle_seed=d.shuffle_seed,
        fill_to=d.get("fill_to"),
    )


def job_spec(cfg: DictConfig, run_dir: Path) -> JobSpec:
    """The framework-neutral job spec of one run, validated."""
    if cfg.framework.name not in runners.available():
        raise UserError(f"framework={cfg.framework.name}: no runner; known: {', '.join(runners.available())}")
    cache_dir = Path(cfg.cache_dir).expanduser()
    return JobSpec(
        framework=cfg.framework.name,
        framework_version=str(cfg.framework.version),
        model=model_spec(cfg, cache_dir),
        data=data_spec(cfg),
        train=from_mapping(TrainSpec, OmegaConf.to_container(cfg.train, resolve=True), "train"),
        run_dir=str(run_dir.resolve()),
        skip_steps=cfg.skip_steps,
        # The base model is the same for every run: evaluated once, in the sweep's first run.
        evaluation=EvalSpec(**OmegaConf.to_container(cfg.eval, resolve=True), base=hydra_job_num() == 0),
    ).validate()


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


def framework_requirements(fw: DictConfig, worker: list[str] = ()) -> list[str]:
    """The framework's requirements, the companion pins of its release and the harness's worker needs."""
    companions = fw.get("companions") or {}
    return [*fw.requirements, *companions.get(str(fw.version), companions.get("default", [])), *worker]


def framework_python(cfg: DictConfig, cache_dir: Path) -> tuple[Path, float | None]:
    fw = cfg.framework
    if fw.python:
        return envs.check_python(fw.python), None
    requirements = framework_requirements(fw, list(cfg.worker_requirements))
    env = envs.env_dir(cache_dir, fw.name, str(fw.version), requirements)
    with console.status(f"[bold]{fw.name} {fw.version}[/]: environment") as status:

        def show(line: str) -> None:
            status.update(f"[bold]building {fw.name} {fw.version} environment[/] {line[:100]}")

        return envs.ensure_env(env, requirements, show)


def finished_ok(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary when a previous attempt finished it with status ok (for resume)."""
    prior = results.read_json(run_dir / results.SUMMARY)
    return prior if prior and prior.get("status") == "ok" else None


def execute(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """One run, start to summary. Never raises for a run that fails: the failure is its result."""
    spec = job_spec(cfg, run_dir)
    results.clear_run(run_dir)  # a rerun in the same directory starts from nothing
    for files in (spec.data.train_files, spec.data.eval_files):  # bad rows stop the sweep before this run starts
        load_examples(files, spec.data.max_rows, spec.data.on_bad_row, spec.data.shuffle_seed)
    results.write_text_atomic(run_dir / results.SPEC, spec.to_json())
    results.write_text_atomic(run_dir / results.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    cache_dir = Path(cfg.cache_dir).expanduser()
    base = {
        "run": run_dir.name,
        "started_at": time.time(),
        "framework": spec.framework,
        "framework_version": spec.framework_version,
        "overrides": list(HydraConfig.get().overrides.task),
        "git_commit": git_commit(),
        "spec": results.SPEC,
        "events": results.EVENTS,
        "samples": results.SAMPLES,
    }
    runner = runners.load(spec.framework)
    reason = runner.preflight(spec) if hasattr(runner, "preflight") else None
    if reason:
        return {**base, "status": "skipped", "reason": reason, "metrics": {}}
    try:
        python, build_s = framework_python(cfg, cache_dir)
    except envs.EnvError as e:
        return {**base, "status": "failed", "reason": f"environment: {e}".splitlines()[0], "log_tail": str(e)}
    env = launch.worker_env(launch.worker_pythonpath(cache_dir), dict(cfg.framework.env))
    columns = [TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        outcome = launch.launch(
            python, run_dir, env, cfg.timeout_s, cfg.sampler, spec.train.max_steps, progress, spec.train.num_gpus
        )
    base["ended_at"] = time.time()
    report = summary.read_worker(run_dir)  # None when the worker died before reporting
    status, reason = summary.status_of(report, outcome)
    worker = report or {}
    versions = worker.get("versions", {})
    base["framework_version"] = versions.get(spec.framework, spec.framework_version)  # what really ran
    out = {
        **base,
        "status": status,
        "reason": reason,
        "python": str(python),
        "versions": versions,
        "hardware": worker.get("hardware", {}),
        "effective": {k: worker.get(k) for k in ("precision", "gradient_checkpointing", "train_examples", "tokenize")},
        "quality": worker.get("quality", {}),  # held-out loss, perplexity, ROUGE-L, BLEU-4 after training
        "base_quality": worker.get("base_quality", {}),  # the same for the base model (first run of a sweep)
        "data": worker.get("data", {}),  # rows read, kept, duplicates, skipped by problem, over max length
        "fingerprint": worker.get("fingerprint", {}),
        "notes": worker.get("notes", []),  # where a framework does not follow the spec to the letter
        "metrics": summary.metrics(
            run_dir, worker, outcome, spec.skip_steps, spec.train.batch_size * spec.train.grad_accum
        ),
    }
    if build_s is not None:
        out["metrics"]["env_build_s"] = build_s
    out["metrics"]["parent_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if status != "ok":
        out["log_tail"] = outcome.log_tail
    return out


def run_job(cfg: DictConfig) -> str:
    """One run of the sweep (Hydra's task function)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if cfg.resume and (prior := finished_ok(run_dir)):
        console.print(f"run {hc.job.num + 1}: {prior['framework']} ok in an earlier attempt, kept ({run_dir})")
        return "ok"
    try:
        out = execute(cfg, run_dir)
    except (UserError, SpecError, DataError) as e:
        console.print(f"[red]error:[/] {e}")
        sys.exit(2)  # SystemExit passes through Hydra's launcher: the sweep stops, no traceback
    results.write_json_atomic(run_dir / results.SUMMARY, out)
    if out["status"] == "interrupted":
        console.print(f"[red]interrupted:[/] {run_dir} recorded as interrupted; finished runs are intact")
        sys.exit(130)  # the sweep stops here, without a traceback
    style = "green" if out["status"] == "ok" else "yellow" if out["status"] == "skipped" else "red"
    of = f"/{SWEEP_SIZE}" if SWEEP_SIZE else ""
    console.print(
        f"run {hc.job.num + 1}{of}: {out['framework']} {' '.join(hc.overrides.task)} "
        f"[{style}]{out['status']}[/] {out['reason']}"
    )
    return out["status"]


def sweep_size(config: DictConfig) -> int:
    """How many runs the sweep's overrides (command line over hydra.sweeper.params) expand to."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    counts: dict[str, int] = {}
    for o in OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task]):
        counts[o.get_key_element()] = len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
    return math.prod(counts.values())


# Hydra's entry point. The task function stays importable as bench.run.run_job, so launchers that pickle it
# (submitit) send a reference rather than the module's state.
main = hydra.main(version_base="1.3", config_path=str(REPO / "conf"), config_name="config")(run_job)


class SweepTable(Callback):
    """Counts the sweep's runs at its start; prints them side by side once every run has finished."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global SWEEP_SIZE
        SWEEP_SIZE = sweep_size(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        out = Console(width=None if sys.stdout.isatty() else 160)
        out.print(summary.sweep_table(summary.load_summaries(sweep_dir), title=f"sweep {sweep_dir}"))
        try:
            from bench import report  # pandas and matplotlib: loaded only now, after the runs

            paths = report.build(sweep_dir, baseline=config.report.baseline)
            out.print(f"report: {paths['report.html']}  (rebuild: python -m bench.report {sweep_dir})")
        except Exception as e:  # the runs are recorded; a report can be rebuilt from them
            console.print(f"[yellow]report not built:[/] {type(e).__name__}: {e}")


if __name__ == "__main__":
    from bench import run  # one module object: Hydra instantiates SweepTable from bench.run, not __main__

    run.main()
