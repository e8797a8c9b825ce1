"""The runs of one or more sweeps as one table: a row per run (runs.csv), read through bench.core.record.

What the report, the gate (bench.compare) and the exporter share; pandas only, no plotting or statistics
libraries, so the gate stays light.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.assess import parity, shared_machine, torch_build, varying_overrides
from bench.core import config, record
from bench.core import metrics as registry
from bench.core.errors import UserError
from bench.core.record import Summary
from bench.core.spec import STACK, flatten

RUN_METRICS = registry.shown("runs")
PARITY = ("parity_reference", "same_tokens", "step1_loss_rel_diff", "curve_loss_rel_diff", "curve_steps",
          "padding_diff")  # fmt: skip
# The job fields a base-model evaluation depends on: a run of another model or held-out set has another base.
BASE_FIELDS = ("job.model.", "job.dataset.", "job.eval.", "job.train.max_seq_len", "job.train.chat_template")
# spec.json's sections under today's names; older harness versions wrote "data" and "evaluation".
SPEC_SECTIONS = {"model": "model", "dataset": "dataset", "data": "dataset", "train": "train", "eval": "eval",
                 "evaluation": "eval"}  # fmt: skip


@dataclass
class RunsTable:
    """The table and what it was read from: each row's run (by its name in the table) and the runs without a
    usable summary (run, why)."""

    frame: pd.DataFrame
    unreadable: list[dict[str, str]]
    by_name: dict[str, record.Run]
    sweeps: dict[str, Path]


# Overrides that do not tell systems apart: the framework, its version, source and interpreter are in the name
# already, the kernels in the framework's system name (`trl+liger`); seeds make repeats; the rest says where
# files go. `framework.env` is left out too: its values may be secrets.
# Overrides that name no setting of a system: the framework, its version, source and interpreter are named
# by the system itself (`trl 1.16.0 @ 3f2a1c9`); others (framework.token_metrics=false, train.lr=2e-4) are.
NOT_A_SETTING = ("framework=", "framework.version=", "framework.source=", "framework.python=", "framework.env",
                 "train.seed", "train.kernels", "results_dir", "hydra.", "resume", "cache_dir")
OTHER_TOKENS = "trained on different tokens"  # two runs whose data fingerprints differ: no ratio, no parity
NOTE_SEP = " | "  # between a run's notes in runs.csv's `notes` column
# job.* columns that differ between runs of one job: where this host caches the model, and the harness's
# choice of the sweep's first run to also evaluate the base model.
PER_RUN_FIELDS = ("job.model.path", "job.eval.base")

def setting(override: str) -> str | None:
    """An override as part of a system's name (`train.lr=2e-4` -> `lr=2e-4`), or None where it names none."""
    key = override.lstrip("+~")
    if key.startswith(NOT_A_SETTING):
        return None
    name, sep, value = key.partition("=")
    return name.split(".", 1)[-1] + sep + value


def system_names(summaries: list[Summary]) -> list[str]:
    """Each run's system: the framework with its kernels, its version (as installed, else as requested), and
    the settings the sweep varies across its runs. Runs without recorded overrides (an older harness) vary
    nothing and make no other run vary."""
    recorded = [s for s in summaries if s.overrides is not None]
    varied = iter(varying_overrides(recorded))
    names = []
    for s in summaries:
        overrides = next(varied) if s.overrides is not None else []
        parts = [s.name or "?", s.version, *filter(None, map(setting, overrides))]
        names.append(" ".join(str(p) for p in parts if p))
    return names


def _differs(x: Any, y: Any) -> bool:
    if pd.isna(x) or pd.isna(y):
        return not (pd.isna(x) and pd.isna(y))
    return x != y


def differing_fields(a: pd.Series, b: pd.Series) -> list[str]:
    """The job fields (`job.*` columns) on which two runs differ, per-run fields left out."""
    return [c for c in a.index if c.startswith("job.") and c not in PER_RUN_FIELDS and _differs(a[c], b.get(c))]


def version_columns() -> list[str]:
    """The shared training stack, then every registered framework's own packages (conf/framework/)."""
    packages = list(STACK)
    for facts in config.frameworks().values():
        packages += [facts["distribution"], *facts["packages"]]
    return list(dict.fromkeys(packages))


def spec_section(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """One section of a run's spec.json by today's name, whichever name its harness version wrote it under."""
    return next((v for k, v in spec.items() if SPEC_SECTIONS.get(k) == name and isinstance(v, dict)), {})


def spec_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The run's spec.json as `job.train.lr`-style columns (whatever its harness version wrote: old section
    names map to today's, so `job.dataset.*` and `job.eval.*` either way); paths and the model's architecture
    left out."""
    sections = {name: spec_section(spec, name) for name in dict.fromkeys(SPEC_SECTIONS.values())}
    sections = {k: v for k, v in sections.items() if v}
    return {
        f"job.{k}": ",".join(map(str, v)) if isinstance(v, list) else v
        for k, v in flatten(sections).items()
        if not k.endswith(("_files", "_file", ".config"))
    }


def machine_columns(s: record.Summary) -> dict[str, Any]:
    """What machine and torch a run measured, and whether it had that machine to itself (summary `host`,
    `hardware`, `versions` and the host-load metrics)."""
    hw = s.hardware or record.Hardware()
    return {
        "torch_build": torch_build(s),
        "cpu_model": s.host.cpu_model or hw.cpu,
        "cpu_cores": s.host.cpu_cores or hw.cpu_count,
        "ram_gb": None if s.host.ram_mb is None else round(s.host.ram_mb / 1024, 1),
        "gpu_driver": s.host.gpu_driver,
        "shared_machine": shared_machine(s.metrics),
    }


def published_columns(s: record.Summary) -> dict[str, Any]:
    """Whether the run replays a published run and what this host left out of it (bench.sweep.published), the
    claims its scenario carries (JSON, checked by bench.analysis.replay) and the steps it trained."""
    return {
        "published_source": s.published.source if s.published else None,
        "as_published": s.published.as_published if s.published else None,
        "left_out": "; ".join(s.published.left_out) if s.published else "",
        "published_train_s": s.published.train_s if s.published else None,
        "published_peak_memory_gb": s.published.peak_memory_gb if s.published else None,
        "published_unlike": "; ".join(s.published.unlike) if s.published else "",
        "claims": json.dumps(s.claims) if s.claims else None,
        "trained_steps": s.effective.max_steps,
    }


def source_columns(source: dict[str, Any] | None) -> dict[str, Any]:
    """A run through framework.source: the commit it installed (None for a tree that is no clean checkout)
    and, where the source is local (a directory, git+file://), the repository, for history's commit order."""
    given = str((source or {}).get("given") or "")
    if given.startswith("git+"):  # git+URL@REF: local only as git+file://PATH@REF
        given = given.removeprefix("git+file://").rpartition("@")[0] if given.startswith("git+file://") else ""
    return {"source_commit": None if not source or source.get("dirty") else source.get("commit"),
            "source_repo": given or None}  # fmt: skip


def row(run: record.Run, name: str, versions: list[str]) -> dict[str, Any]:
    """A run's row of runs.csv: what ran, where, how it went, its metrics and its job's fields."""
    s = run.summary
    return {
        "run": name,
        # The system under test: `trl`, or `trl+liger` with train.kernels (its own rows, groups and ratios).
        "framework": s.name,
        "framework_version": s.framework_version,
        "job_key": s.job_key,
        "seed": s.seed,
        "scenario": s.scenario,  # conf/scenario/ preset, shown in the header
        "status": s.status,
        "reason": s.reason,
        "notes": NOTE_SEP.join(s.notes),  # what qualifies the run's numbers (bench.analysis.findings.note_lines)
        "model": spec_section(run.spec, "model").get("name"),
        "dataset": spec_section(run.spec, "dataset").get("name"),
        "precision": s.effective.precision,
        "device": s.hardware.device if s.hardware else None,
        **machine_columns(s),
        "train_examples": s.effective.train_examples,
        **published_columns(s),
        **{n: (s.quality if registry.get(n).source == "quality" else s.metrics).get(n) for n in RUN_METRICS},
        "heldout_overlap_with_train": s.data.heldout.overlap_with_train if s.data.heldout else None,
        "fingerprint": s.fingerprint.first_batches_sha256[:12],
        **{f"v_{p}": s.versions.get(p) for p in versions},
        "git_commit": s.git_commit,
        **source_columns(s.source),
        **spec_fields(run.spec),
    }


def with_base(rows: list[dict[str, Any]], summaries: list[record.Summary]) -> None:
    """Each of one sweep's rows gets the base model's scores (`base_heldout_loss`, `base_rouge_l`,
    `base_bleu4`) and the run that evaluated it (`base_evaluated_in`: the sweep's first run), where its model,
    dataset and evaluation are that run's: another model's base is not this run's."""
    evaluated = next(((r, s.base_quality) for r, s in zip(rows, summaries, strict=True) if s.base_quality), None)
    for r in rows:
        r |= {"base_evaluated_in": None, "base_heldout_loss": None, "base_rouge_l": None, "base_bleu4": None}
        if evaluated is None:
            continue
        ref, base = evaluated
        differing = differing_fields(pd.Series(r, dtype=object), pd.Series(ref, dtype=object))
        if not [f for f in differing if f.startswith(BASE_FIELDS)]:
            r |= {"base_evaluated_in": ref["run"], "base_heldout_loss": base.get("heldout_loss"),
                  "base_rouge_l": base.get("rouge_l"), "base_bleu4": base.get("bleu4")}  # fmt: skip


def sweeps_of(sweep_dir: Path, others: Sequence[Path] = ()) -> dict[str, Path]:
    """The sweeps a table covers, by the prefix their runs' names take: none with one sweep (its runs keep
    their names); with several, the sweep directory's name, so that run names stay unique across them."""
    if not others:
        return {"": sweep_dir}
    sweeps = [sweep_dir, *others]
    names = [s.resolve().name for s in sweeps]
    if len(set(names)) < len(names):
        raise UserError(f"sweeps {', '.join(map(str, sweeps))}: two share a directory name, which names their runs")
    return {f"{name}/": s for name, s in zip(names, sweeps, strict=True)}


def load(sweep_dir: Path, others: Sequence[Path] = ()) -> RunsTable:
    """One row per run that has a readable summary, its `system` named (system_names) and its
    parity with the first run of its job; the others as (run, why). With other sweeps, their runs too, each
    run named by its sweep. Each run directory is read once."""
    rows, unreadable, by_name = [], [], {}
    versions = version_columns()
    sweeps = sweeps_of(sweep_dir, others)
    for prefix, sweep in sweeps.items():
        runs, its_unreadable = record.load_sweep(sweep)
        for run in runs:
            run.summary.run = prefix + run.summary.run  # its name in the table, unique across the sweeps
        its_rows = [row(run, run.name, versions) for run in runs]
        with_base(its_rows, [run.summary for run in runs])
        rows += its_rows
        unreadable += [{"run": prefix + u.run, "why": u.why} for u in its_unreadable]
        by_name |= {run.name: run for run in runs}
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame.insert(1, "system", system_names([run.summary for run in by_name.values()]))
        checks = parity(list(by_name.values()))
        for col in PARITY:
            frame[col] = [p.get(col.removeprefix("parity_")) for p in checks]
    return RunsTable(frame, unreadable, by_name, sweeps)


def load_runs(sweep_dir: Path, others: Sequence[Path] = ()) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """The table of load() and the runs without a usable summary."""
    runs = load(sweep_dir, others)
    return runs.frame, runs.unreadable
