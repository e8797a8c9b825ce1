"""Export a finished sweep to an experiment tracker: one tracker run per benchmark run.

    python -m bench.export results/<sweep> --to mlflow [--uri file:///abs/mlruns | http://host:5000]
    python -m bench.export results/<sweep> --to tensorboard [--logdir runs]
    python -m bench.export results/<sweep> --to github-action-benchmark | bencher [--out DIR]

The dashboards (github-action-benchmark's custom JSON, Bencher Metric Format): bench/analysis/dashboards.py.

Each run carries its row of runs.csv (bench.analysis.runs.load_runs) as params — the job spec flattened (`job.*`),
framework, installed versions (`v_*`), job key, seed, status and reason — and as metrics the summary's scalar
metrics under their registry names (bench/core/metrics.py), logged at the run's last step, plus per-step
`step/loss`, `step/lr`, `step/grad_norm` and `step/tokens_per_s` from events.jsonl with their step numbers and
wall-clock times. Failed and skipped runs are exported too, with their status and reason and no metrics they
do not have; runs without a readable summary are listed and left out. MLflow runs are named `<sweep>/<run>`
(tags `sftbench.sweep`, `sftbench.run`) in one experiment (`--experiment`, default `sftbench`); TensorBoard
runs are `<logdir>/<sweep>/<run>`, params shown by the HParams dashboard. A run exported before is left as
it is, so exporting again after `resume=true` adds only the new runs.

The trackers are an optional extra: pip install 'sftbench[export]'. A local MLflow store is MLflow's file
store (mlflow-skinny has no database backend); it is allowed for this export even though MLflow has put it in
maintenance mode (MLFLOW_ALLOW_FILE_STORE).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from bench.core import metrics as registry
from bench.core import results
from bench.core.errors import UserError
from bench.core.record import Step

INSTALL = "pip install 'sftbench[export]'"
STEP_SERIES = ("loss", "lr", "grad_norm", "tokens_per_s")  # per optimizer step, from events.jsonl
MLFLOW_STATUS = {"ok": "FINISHED", "skipped": "KILLED", "interrupted": "KILLED"}  # anything else: FAILED
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value (a long failure reason)

Point = tuple[int, float, float | None]  # step, value, wall-clock time (s)


@dataclass
class TrackedRun:
    """What a tracker receives of one benchmark run."""

    sweep: str
    run: str
    status: str
    params: dict[str, str | int | float | bool]
    metrics: dict[str, float]  # summary scalars by registry name
    steps: dict[str, list[Point]] = field(default_factory=dict)  # step/<series> -> points
    last_step: int = 0

    @property
    def name(self) -> str:
        return f"{self.sweep}/{self.run}"

    @property
    def start_time(self) -> float | None:
        times = [t for points in self.steps.values() for _, _, t in points if t is not None]
        return min(times) if times else None


def _scalar(value: Any) -> Any:
    """A plain Python value from a table cell; None where it is missing (NaN, pandas' NA)."""
    import pandas as pd

    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value  # numpy scalars


def step_series(events: list[Step]) -> dict[str, list[Point]]:
    """Per-step loss, learning rate, gradient norm and tokens/s (tokens over the step's time)."""
    series: dict[str, list[Point]] = {f"step/{name}": [] for name in STEP_SERIES}
    for e in events:
        values = {"loss": e.loss, "lr": e.lr, "grad_norm": e.grad_norm}
        if e.step_time_s:
            values["tokens_per_s"] = e.tokens / e.step_time_s
        for name, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                series[f"step/{name}"].append((e.step, float(value), e.time))
    return {k: v for k, v in series.items() if v}


def collect(sweep_dir: Path) -> tuple[list[TrackedRun], list[dict[str, str]]]:
    """Every run of the sweep with a readable summary as a TrackedRun; the others as (run, why)."""
    from bench.analysis import runs  # pandas: loaded only when exporting

    table = runs.load(sweep_dir)
    frame, unreadable = table.frame, table.unreadable
    # Integer columns with a missing cell (a skipped run has no spec) come back as floats: make them ints again.
    frame = frame.convert_dtypes() if not frame.empty else frame
    out = []
    for row in frame.to_dict("records"):
        row = {k: _scalar(v) for k, v in row.items()}
        metrics, params = {}, {}
        for name, value in row.items():
            if value is None or value == "":
                continue  # a missing or empty cell is no param, not the string "nan" or ""
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if name in registry.METRICS and numeric:
                metrics[name] = float(value)
            else:
                params[name] = value
        steps = step_series(table.by_name[row["run"]].events)
        last = max((s for points in steps.values() for s, _, _ in points), default=0)
        out.append(TrackedRun(sweep_dir.name, row["run"], str(row["status"]), params, metrics, steps, last))
    return out, unreadable


def _require(module: str, tracker: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"--to {tracker} needs {module.split('.')[0]}, not installed: {INSTALL}") from None


@contextlib.contextmanager
def _allow_file_store(uri: str) -> Iterator[None]:
    """MLflow 3 refuses its file store unless told otherwise; a local export is what that store is for."""
    scheme = urlparse(uri).scheme
    if scheme not in ("", "file") or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def to_mlflow(runs: list[TrackedRun], uri: str, experiment: str = "sftbench") -> list[str]:
    """Log each run to the MLflow tracking store at `uri`; what happened to each, one line per run."""
    _require("mlflow", "mlflow")
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    lines = []
    try:
        with _allow_file_store(uri):
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else client.create_experiment(experiment)
            for r in runs:
                where = f"tags.`sftbench.sweep` = '{r.sweep}' and tags.`sftbench.run` = '{r.run}'"
                if client.search_runs([exp_id], where, max_results=1):
                    lines.append(f"{r.name}: already in experiment {experiment}, left as it is")
                    continue
                start_ms = int(r.start_time * 1000) if r.start_time else None
                tags = {"sftbench.sweep": r.sweep, "sftbench.run": r.run}
                if r.status != "ok" and r.params.get("reason"):
                    tags["mlflow.note.content"] = f"{r.status}: {r.params['reason']}"
                run = client.create_run(exp_id, start_time=start_ms, tags=tags, run_name=r.name)
                run_id = run.info.run_id
                params = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in r.params.items()]
                metrics = [Metric(k, v, int(t * 1000) if t else 0, s)
                           for k, points in r.steps.items() for s, v, t in points]  # fmt: skip
                end_ms = max((m.timestamp for m in metrics), default=start_ms or 0)
                metrics += [Metric(k, v, end_ms, r.last_step) for k, v in r.metrics.items()]
                client.log_batch(run_id, metrics=metrics, params=params)
                client.set_terminated(run_id, MLFLOW_STATUS.get(r.status, "FAILED"), end_time=end_ms or None)
                lines.append(f"{r.name}: run {run_id} ({r.status}, {len(metrics)} metric values)")
    except MlflowException as e:
        raise UserError(f"mlflow at {uri}: {str(e).splitlines()[0]}") from None
    return lines


def to_tensorboard(runs: list[TrackedRun], logdir: Path) -> list[str]:
    """Write each run's event file under `logdir/<sweep>/<run>`; one line per run."""
    tbx = _require("tensorboardX", "tensorboard")
    hparams = _require("tensorboardX.summary", "tensorboard").hparams
    lines = []
    for r in runs:
        run_dir = logdir / r.sweep / r.run
        if run_dir.exists() and any(run_dir.iterdir()):
            # A second event file in the same directory would double every curve.
            lines.append(f"{r.name}: {run_dir} exists, left as it is")
            continue
        with tbx.SummaryWriter(logdir=str(run_dir)) as writer:
            for tag, points in r.steps.items():
                for step, value, t in points:
                    writer.add_scalar(tag, value, step, walltime=t)
            end = max((t for points in r.steps.values() for _, _, t in points if t), default=None)
            for name, value in r.metrics.items():
                writer.add_scalar(name, value, r.last_step, walltime=end)
            # The HParams dashboard: this run's params beside its summary metrics.
            for summary in hparams(r.params, dict.fromkeys(r.metrics, 0.0)):
                writer.file_writer.add_summary(summary, walltime=end)
        lines.append(f"{r.name}: {run_dir} ({r.status}, {len(r.metrics)} metrics, {len(r.steps)} step series)")
    return lines


def export(sweep_dir: Path, to: str, uri: str | None = None, logdir: Path | None = None,
           experiment: str = "sftbench") -> list[str]:  # fmt: skip
    """Export every finished run of `sweep_dir`; the report of what was done, one line each."""
    check_sweep(sweep_dir)
    runs, unreadable = collect(sweep_dir)
    if not runs:
        raise UserError(f"{sweep_dir}: no run with a summary.json to export")
    exporters: dict[str, Callable[[], list[str]]] = {
        "mlflow": lambda: to_mlflow(runs, uri or default_mlflow_uri(), experiment),
        "tensorboard": lambda: to_tensorboard(runs, logdir or Path("runs")),
    }
    lines = exporters[to]()
    return lines + [f"{u['run']}: not exported, {u['why']}" for u in unreadable]


def check_sweep(sweep_dir: Path) -> None:
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir}: not a sweep directory")
    if (sweep_dir / results.SUMMARY).exists():
        raise UserError(f"{sweep_dir}: a run directory; pass its sweep, {sweep_dir.parent}")


def default_mlflow_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a file store in ./mlruns."""
    return os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.export",
        description=__doc__.splitlines()[0] + f" Needs the optional extra: {INSTALL}",
        epilog="examples: python -m bench.export results/<sweep> --to tensorboard --logdir runs && tensorboard "
        "--logdir runs; python -m bench.export results/<sweep> --to mlflow --uri http://localhost:5000",
    )
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--to", "--format", dest="to", required=True,
                    choices=("mlflow", "tensorboard", "github-action-benchmark", "bencher"),
                    help="the tracker, or the dashboard format")  # fmt: skip
    ap.add_argument("--out", type=Path, help="where a dashboard's file(s) go (default: the sweep directory)")
    ap.add_argument("--uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else file://$PWD/mlruns)")
    ap.add_argument("--experiment", default="sftbench", help="MLflow experiment (default: sftbench)")
    ap.add_argument("--logdir", type=Path, help="TensorBoard log directory (default: runs)")
    a = ap.parse_args(argv)
    try:
        if a.to in ("github-action-benchmark", "bencher"):
            from bench.analysis import dashboards

            check_sweep(a.sweep_dir)
            lines = dashboards.write(a.sweep_dir, a.to, a.out or a.sweep_dir)
        else:
            lines = export(a.sweep_dir, a.to, a.uri, a.logdir, a.experiment)
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
