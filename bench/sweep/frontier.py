"""Memory frontier: the largest sequence length (or batch) that trains without running out of memory.

    python -m bench.frontier framework=trl,unsloth model=qwen2.5-0.5b-arch \
        frontier.axis=seq_len frontier.vram_budget_gb=24,48,80

Per framework and memory budget (one Hydra job each) a bounded search: doubling from `frontier.start` until
a probe runs out of memory or `frontier.limit` is reached, then bisection down to `frontier.granularity`,
never more than `frontier.max_probes` probes. Each probe is a few training steps in a fresh worker
(`probe-<value>/` in the job's directory, a run like any other). A budget smaller than the card is enforced
with torch.cuda.set_per_process_memory_fraction, so one large GPU answers for smaller cards. Seq-len probes
pack the tokenized data into sequences of exactly that length (strict mode), so every probe is full.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict
from rich.console import Console

from bench.analysis import frontier_table
from bench.core import config, record, results
from bench.core.errors import UserError
from bench.core.spec import JobSpec
from bench.sweep.app import console, credentials_in, execute, open_env

FRONTIER = results.FRONTIER
# What a search varies on purpose: left out of its job key, so every probe and budget is one job. Job key
# field names (JobSpec.job_fields), frozen: `data.fill_to` is the config's dataset.fill_to.
VARIED = ("train.max_seq_len", "train.batch_size", "train.vram_budget_gb", "data.fill_to", "data.tokenize")


class ProbeFailed(RuntimeError):
    """A probe failed for another reason than memory: the search cannot say anything."""


@dataclass
class Frontier:
    framework: str
    axis: str
    budget_gb: float | None
    largest: int | None  # None: does not fit at the smallest probe
    probes: list[dict[str, Any]] = field(default_factory=list)
    job_key: str | None = None  # the searched job, less what the search varies (VARIED)
    device: str | None = None  # the GPU the probes ran on, or "cpu"
    limit: int | None = None  # frontier.limit: a largest value equal to it means "at least"
    method: str = frontier_table.METHOD
    budget_note: str | None = None  # the worker's word when the budget was not applied as asked (no GPU, small card)


def search(fits: Callable[[int], bool], start: int, limit: int, granularity: int, max_probes: int):
    """Largest value in [start, limit] for which `fits` holds (assumed monotone), and the probes made.

    Doubling until the first failure, then bisection to `granularity`, at most `max_probes` calls.
    """
    probes: list[tuple[int, bool]] = []

    def probe(value: int) -> bool:
        ok = fits(value)
        probes.append((value, ok))
        return ok

    best, failed, value = None, None, start
    while len(probes) < max_probes:
        if not probe(value):
            failed = value
            break
        best = value
        if value >= limit:
            return best, probes
        value = min(value * 2, limit)
    if best is None:
        return None, probes
    while failed is not None and failed - best > granularity and len(probes) < max_probes:
        mid = best + (failed - best) // 2 // granularity * granularity
        if probe(mid):
            best = mid
        else:
            failed = mid
    return best, probes


def probe_config(cfg: DictConfig, axis: str, value: int, budget: float | None) -> DictConfig:
    """The job's config for one probe: a few steps at `value`, no evaluation, the budget applied."""
    probe = cfg.copy()
    with open_dict(probe):
        probe.train.max_steps = cfg.frontier.probe_steps
        probe.train.epochs = None  # a probe is a few steps, whatever the job's length of training
        probe.train.vram_budget_gb = budget
        probe.skip_steps = 0
        probe.eval.enabled = False
        if axis == "seq_len":
            probe.train.max_seq_len = value
            probe.dataset.tokenize = "harness"
            probe.dataset.fill_to = value
        else:
            probe.train.batch_size = value
    return probe


def run_search(cfg: DictConfig, job_dir: Path) -> Frontier:
    f = config.validate(cfg).frontier
    if f is None:
        raise UserError("no frontier group in the config: run python -m bench.frontier")
    budget = f.vram_budget_gb
    found = Frontier(cfg.framework.name, f.axis, budget, None, limit=f.limit)

    def fits(value: int) -> bool:
        run_dir = job_dir / f"probe-{value}"
        run_dir.mkdir(parents=True, exist_ok=True)
        out = execute(probe_config(cfg, f.axis, value, budget), run_dir)
        record.write_summary(run_dir, out)
        found.job_key = found.job_key or JobSpec.load(run_dir / results.SPEC).job_key(ignore=VARIED)
        found.probes.append({"value": value, "status": out.status, "reason": out.reason})
        found.budget_note = next((n for n in out.notes if n.startswith("train.vram_budget_gb")), None)
        found.device = found.device or (out.hardware.device if out.hardware else None)
        console.print(f"  probe {f.axis}={value}: {out.status}")
        if out.status not in ("ok", "oom"):
            raise ProbeFailed(f"probe {f.axis}={value} {out.status}: {out.reason}")
        return out.status == "ok"

    found.largest, _ = search(fits, f.start, f.limit, f.granularity, f.max_probes)
    return found


def frontier_job(cfg: DictConfig) -> str:
    """One framework x budget search (Hydra's task function)."""
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        found = run_search(cfg, job_dir)
    except UserError as e:  # SpecError and DataError included
        console.print(f"[red]error:[/] {e}")
        sys.exit(2)
    except ProbeFailed as e:
        console.print(f"[red]search stopped:[/] {e}")
        found = Frontier(cfg.framework.name, cfg.frontier.axis, cfg.frontier.vram_budget_gb, None, [{"error": str(e)}])
    results.write_json_atomic(job_dir / FRONTIER, asdict(found))
    return "ok"


main = hydra.main(version_base="1.3", config_path=str(config.conf_dir()), config_name="frontier")(frontier_job)


class FrontierTable(Callback):
    """Prints and saves the frontier table once every search of the sweep has finished."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        found = frontier_table.load(sweep_dir)
        results.write_json_atomic(sweep_dir / FRONTIER, found)
        Console(width=None if sys.stdout.isatty() else 160).print(frontier_table.table(found))
        from bench.analysis import report

        paths = report.build(sweep_dir, baseline=config.report.baseline)
        Console().print(f"report: {paths['report.html']}")


def cli() -> None:
    """`python -m bench.frontier`: the command line checked before Hydra writes it anywhere."""
    sys.argv[1:] = open_env(sys.argv[1:])
    if problem := credentials_in(sys.argv[1:]):
        console.print(f"[red]error:[/] {problem}", soft_wrap=True)
        sys.exit(2)
    main()
