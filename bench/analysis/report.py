"""Sweep reports: the findings first (findings.py), then one table per question — speed, memory, quality,
parity, conditions — each of at most nine columns, systems by name, with figures that compare them (plots.py).

    python -m bench.report results/<sweep> [results/<other sweep> ...] [--baseline trl]

Writes runs.csv and runs.parquet (every column of every run, its ratios against the baseline included),
report.md (its SVG figures beside it) and report.html (one self-contained file) into the (first) sweep
directory. Runs whose summary is missing or unreadable are listed with the reason, never fatal; a sweep with no
runs, or none that finished ok, gets a report that says so. Other sweeps' runs join the report, each run named
`<sweep directory>/<run>` (a sweep of published runs next to one of the same frameworks on one job:
bench.analysis.replay). A path that is no sweep is one line and exit 2.
"""

from __future__ import annotations

import argparse
import html
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis import findings, frontier_table, history, plots, replay, runs
from bench.analysis.assess import CURVE_RTOL, PADDING_TOL, SHARED_CPU_CORES, STEP1_RTOL, torch_build_mismatches
from bench.analysis.replay import Section
from bench.analysis.runs import NOTE_SEP, RunsTable
from bench.core import config, record, results
from bench.core import metrics as registry
from bench.core.errors import UserError

REPEATED = ("tokens_per_s", "peak_vram_mb", "peak_rss_mb", "heldout_loss")  # mean, 95 % CI and CV over seeds
MEANS = ("step_time_s_mean", "mfu", "energy_j_per_1k_tokens", "torch_max_allocated_mb", "rouge_l", "bleu4",
         "base_heldout_loss")  # fmt: skip
RATIOS = ("tokens_per_s", "peak_vram_mb", "peak_rss_mb")  # per run in runs.csv, against the baseline's run
BOOTSTRAP = 2000  # resamples of the evaluated prompts for a quality difference's 95 % interval
NONE = "–"  # a cell with no value; the findings say why
BLEU_NOTE = (
    "BLEU-4 is sacrebleu's corpus BLEU (zh tokenizer) with its default exponential smoothing: where no "
    "4-gram matches (bleu4_4gram_matches = 0) the score is smoothing alone. ROUGE-L is character-level F1. "
    "A quality difference is called one only when its 95 % bootstrap interval over the evaluated prompts "
    "excludes zero."
)



def with_ratios(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The frame with each ok run's throughput and memory over its reference — the ok run of the same job and
    seed of the job's baseline system (bench.analysis.findings.baseline_system) — as `<metric>_vs_<baseline>`, and
    `vs_<baseline>` naming that run or saying why there is none. For runs.csv: the tables show the same ratios
    over seed pairs, with their interval."""
    out = frame.copy()
    note = f"vs_{baseline}"
    out[note] = None
    for col in RATIOS:
        out[f"{col}_vs_{baseline}"] = math.nan
    if frame.empty:
        return out
    for job_key, group in findings.jobs(frame):
        base_system = findings.baseline_system(group, baseline)
        base = group[(group["system"] == base_system) & (group["status"] == "ok")]
        for i, run in group[group["status"] == "ok"].iterrows():
            ref = base[base["seed"] == run["seed"]]
            if job_key is None or base.empty:
                out.at[i, note] = f"no {baseline} run of this job"
            elif ref.empty:
                out.at[i, note] = f"no {baseline} run of this job and seed"
            elif findings.other_tokens(run, ref.iloc[0]):
                out.at[i, note] = f"not comparable: other tokens than {ref['run'].iloc[0]}"
            else:
                out.at[i, note] = f"against {ref['run'].iloc[0]}"
                for col in RATIOS:
                    mine, theirs = run.get(col), ref[col].iloc[0] if col in ref else None
                    if pd.notna(mine) and pd.notna(theirs) and theirs:
                        out.at[i, f"{col}_vs_{baseline}"] = float(mine) / float(theirs)
    return out


def repeats(frame: pd.DataFrame) -> pd.DataFrame:
    """Per job and system, over its ok runs (runs that differ only by seed): n and seeds; mean, 95 % confidence
    half-width (Student's t) and coefficient of variation of tokens/s, peak memory and held-out loss; and the
    mean of the other metrics the tables show."""
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    out = []
    for (job, system), group in ok.groupby([ok["job_key"].astype("string").fillna("-"), "system"], sort=False):
        row = {"system": system, "framework": group["framework"].iloc[0], "job_key": job, "n": len(group),
               "seeds": ",".join(findings.seed_text(s) for s in group["seed"])}  # fmt: skip
        for col in REPEATED:
            values = group[col].dropna().astype(float) if col in group else pd.Series(dtype=float)
            if values.empty:
                continue
            mean, half = replay.t_interval(list(values))
            sd = values.std(ddof=1) if len(values) > 1 else math.nan
            row |= {f"{col}_mean": mean, f"{col}_ci95": half, f"{col}_cv": sd / mean if mean else math.nan}
        for col in MEANS:
            values = group[col].dropna().astype(float) if col in group else pd.Series(dtype=float)
            row[f"{col}_mean"] = values.mean() if not values.empty else math.nan
        out.append(row)
    return pd.DataFrame(out)


# The run files the figures and the quality intervals read, once per run


def run_series(by_name: dict[str, record.Run], frame: pd.DataFrame, labels: pd.Series) -> list[plots.RunSeries]:
    """Every ok run's events and samples, named by its label."""
    out = []
    for i, row in frame[frame["status"] == "ok"].iterrows():
        run = by_name[row["run"]]
        peak = next((row[m] for m in ("peak_vram_mb", "peak_rss_mb") if pd.notna(row.get(m))), None)
        out.append(plots.RunSeries(labels[i], row["system"], run.events, run.samples,
                                   run.summary.sampler.baseline_used_mb, peak))  # fmt: skip
    return out


def rouge_by_prompt(run: record.Run, name: str) -> dict[str, float]:
    return {g.prompt: g.rouge_l for g in run.generations(name)}


def quality_differences(r: RunsTable) -> pd.DataFrame:
    """Per job and system: ROUGE-L after training minus the base model's on the same prompts (per prompt, the
    mean over the system's runs), with a paired bootstrap 95 % interval over the prompts; a difference is
    called one only when the interval excludes zero. Runs without a base model of their own job count none."""
    frame = r.frame
    ok = frame[(frame["status"] == "ok") & frame["base_evaluated_in"].notna()] if not frame.empty else frame
    rows = []
    for (job, system), group in ok.groupby([ok["job_key"].astype("string").fillna("-"), "system"], sort=False):
        per_prompt: dict[str, list[float]] = {}
        for run, base_run in zip(group["run"], group["base_evaluated_in"], strict=True):
            base = rouge_by_prompt(r.by_name[base_run], results.BASE_GENERATIONS)
            for prompt, score in rouge_by_prompt(r.by_name[run], results.GENERATIONS).items():
                if prompt in base:
                    per_prompt.setdefault(prompt, []).append(score - base[prompt])
        if not per_prompt:
            continue
        diffs = np.array([np.mean(v) for v in per_prompt.values()])
        rng = np.random.default_rng(0)
        means = diffs[rng.integers(0, diffs.size, (BOOTSTRAP, diffs.size))].mean(axis=1)
        lo, hi = np.percentile(means, [2.5, 97.5])
        verdict = "better than base" if lo > 0 else "worse than base" if hi < 0 else "no difference (CI spans 0)"
        rows.append({"system": system, "job_key": job, "runs": len(group), "prompts": diffs.size,
                     "rouge_l_minus_base": diffs.mean(), "ci95_low": lo, "ci95_high": hi,
                     "verdict": verdict})  # fmt: skip
    return pd.DataFrame(rows)


# Cells


def num(value: Any) -> str:
    """A measured number for a table: whole and thousands-separated from 1,000, four significant digits below."""
    if value is None or pd.isna(value):
        return NONE
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def with_ci(mean: Any, half: Any, n: int) -> str:
    """`1,234 ± 56` (mean ± 95 % CI half-width) over several runs, both to the decimal place of the
    half-width's second significant digit (no decimals from 10 up); the mean alone over one run."""
    if mean is None or pd.isna(mean):
        return NONE
    if n < 2 or pd.isna(half):
        return num(mean)
    if half <= 0:
        return f"{num(mean)} ± 0"
    decimals = max(0, 1 - math.floor(math.log10(half)))
    return f"{mean:,.{decimals}f} ± {half:,.{decimals}f}"


def rel(value: Any) -> str:
    return NONE if value is None or pd.isna(value) else f"{value:.1e}"


def drop_empty(table: pd.DataFrame) -> pd.DataFrame:
    """The table without columns that hold no value in any row (VRAM on a CPU, MFU without a GPU)."""
    return table[[c for c in table if not table[c].isin([NONE, "", None]).all()]]


# Tables, one per question


@dataclass
class Systems:
    """What every table of systems shares: the per-system means, the comparisons with the baseline system,
    which system is the baseline of which job, and whether the report covers several jobs."""

    reps: pd.DataFrame
    comps: dict[tuple[Any, str], findings.Comparison]
    baselines: dict[Any, str]
    several_jobs: bool

    @classmethod
    def of(cls, frame: pd.DataFrame, reps: pd.DataFrame, found: list[findings.Comparison]) -> Systems:
        comps = {(c.job_key or "-", c.system): c for c in found}
        baselines = {c.job_key or "-": c.baseline for c in found if c.baseline}
        return cls(reps, comps, baselines, frame["job_key"].nunique(dropna=False) > 1)

    def head(self, row: pd.Series) -> dict[str, Any]:
        """The system (marked where it is its job's baseline), its job where there are several, its runs."""
        name = row["system"] + (" (baseline)" if self.baselines.get(row["job_key"]) == row["system"] else "")
        job = {"job": findings.short(row["job_key"])} if self.several_jobs else {}
        return {"system": name, **job, "runs": row["n"]}

    def ratio(self, row: pd.Series, metric: str) -> str:
        """The system's ratio to its job's baseline system with its 95 % CI; 1x for the baseline itself."""
        if self.baselines.get(row["job_key"]) == row["system"]:
            return "1x"
        c = self.comps.get((row["job_key"], row["system"]))
        return (c.ratios[metric].cell() or NONE) if c and metric in c.ratios else NONE

    def vs(self, baseline: str) -> str:
        names = set(self.baselines.values())
        return f"vs {names.pop()}" if len(names) == 1 else f"vs {baseline}"


def speed_table(s: Systems, baseline: str) -> pd.DataFrame:
    rows = []
    for _, r in s.reps.iterrows():
        rows.append({**s.head(r), "tokens/s": with_ci(r.get("tokens_per_s_mean"), r.get("tokens_per_s_ci95"), r["n"]),
                     "CV (%)": f"{100 * r['tokens_per_s_cv']:.2g}" if pd.notna(r.get("tokens_per_s_cv")) else NONE,
                     f"tokens/s {s.vs(baseline)}": s.ratio(r, "tokens_per_s"),
                     "step time (s)": num(r.get("step_time_s_mean_mean")),
                     "MFU (%)": num(100 * r["mfu_mean"]) if pd.notna(r.get("mfu_mean")) else NONE,
                     "energy (J / 1k tokens)": num(r.get("energy_j_per_1k_tokens_mean"))})  # fmt: skip
    return drop_empty(pd.DataFrame(rows))


def memory_table(s: Systems, baseline: str) -> pd.DataFrame:
    rows = []
    for _, r in s.reps.iterrows():
        gpu = pd.notna(r.get("peak_vram_mb_mean"))
        rows.append({**s.head(r),
                     "peak VRAM (MiB)": with_ci(r.get("peak_vram_mb_mean"), r.get("peak_vram_mb_ci95"), r["n"]),
                     f"VRAM {s.vs(baseline)}": s.ratio(r, "peak_vram_mb") if gpu else NONE,
                     "peak RSS (MiB)": with_ci(r.get("peak_rss_mb_mean"), r.get("peak_rss_mb_ci95"), r["n"]),
                     f"RSS {s.vs(baseline)}": s.ratio(r, "peak_rss_mb"),
                     "torch max allocated (MiB)": num(r.get("torch_max_allocated_mb_mean"))})  # fmt: skip
    return drop_empty(pd.DataFrame(rows))


def quality_table(s: Systems, quality: pd.DataFrame, baseline: str) -> pd.DataFrame:
    by = {(q["job_key"], q["system"]): q for _, q in quality.iterrows()} if not quality.empty else {}
    rows = []
    for _, r in s.reps.iterrows():
        q = by.get((r["job_key"], r["system"]))
        loss, base = r.get("heldout_loss_mean"), r.get("base_heldout_loss_mean")
        rouge = (f"{q['rouge_l_minus_base']:+.3g} [{q['ci95_low']:+.3g}, {q['ci95_high']:+.3g}]" if q is not None
                 else NONE)  # fmt: skip
        rows.append({**s.head(r), "held-out loss (nats)": with_ci(loss, r.get("heldout_loss_ci95"), r["n"]),
                     "loss − base model (nats)": f"{loss - base:+.4g}" if pd.notna(loss) and pd.notna(base) else NONE,
                     f"held-out loss {s.vs(baseline)}": s.ratio(r, "heldout_loss"),
                     "ROUGE-L (F1)": num(r.get("rouge_l_mean")), "ROUGE-L − base [95 % CI]": rouge,
                     "BLEU-4": num(r.get("bleu4_mean"))})  # fmt: skip
    return drop_empty(pd.DataFrame(rows))


def parity_table(frame: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """Per ok run, against the first run of its job and seed (its reference): same tokens, step-1 loss, loss
    curve and padding differences."""
    label_of = dict(zip(frame["run"], labels, strict=True))
    rows = []
    for i, r in frame[frame["status"] == "ok"].iterrows():
        ref, steps, padding = r.get("parity_reference"), r.get("curve_steps"), r.get("padding_diff")
        rows.append({"system": labels[i],
                     "reference": "(itself)" if ref == r["run"] else label_of.get(ref, NONE),
                     "same tokens": same_tokens_cell(r),
                     "data fingerprint": r.get("fingerprint") or NONE,
                     "step-1 loss Δ (relative)": rel(r.get("step1_loss_rel_diff")),
                     "loss curve Δ (relative)": rel(r.get("curve_loss_rel_diff")),
                     "curve steps": steps if isinstance(steps, str) else NONE,
                     "padding Δ (points)": NONE if pd.isna(padding) else f"{100 * padding:.2g}"})  # fmt: skip
    return pd.DataFrame(rows)


def same_tokens_cell(run: pd.Series) -> str:
    if not findings.fingerprint(run):
        return "not recorded"  # an older harness recorded no data fingerprint
    return NONE if pd.isna(run.get("same_tokens")) else "yes" if run["same_tokens"] else "no"


CONDITIONS = ("device", "torch_build", "cpu_model", "cpu_cores", "ram_gb", "gpu_driver")


def conditions_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per system and machine: device, torch build, CPU, RAM, driver, and the runs that shared the machine."""
    ran = frame[frame["device"].notna()] if "device" in frame else frame.iloc[0:0]
    if ran.empty:
        return pd.DataFrame()
    cols = [c for c in CONDITIONS if c in ran]
    rows = []
    for keys, group in ran.groupby(["system", *cols], dropna=False, sort=False):
        facts = dict(zip(["system", *cols], keys, strict=True))
        shared = [t.split(": ", 1)[-1] for t in group["shared_machine"].dropna()] if "shared_machine" in group else []
        rows.append({"system": facts["system"], "device": facts.get("device"), "torch build": facts.get("torch_build"),
                     "CPU": facts.get("cpu_model"), "cores": num(facts.get("cpu_cores")),
                     "RAM (GB)": num(facts.get("ram_gb")), "GPU driver": facts.get("gpu_driver"),
                     "shared machine": f"{len(shared)} of {len(group)} runs: " + "; ".join(shared) if shared else "no",
                     "runs": len(group)})  # fmt: skip
    table = pd.DataFrame(rows).astype(object)
    return drop_empty(table.where(table.notna(), NONE))


def conditions_text(frame: pd.DataFrame, labels: pd.Series) -> str:
    text = ("The machine and torch behind each system's runs. A run shared its machine when, while it trained, "
            f"other processes took more than {SHARED_CPU_CORES:.0%} of one core or computed on its GPU: its speed "
            "is not the framework's alone.")  # fmt: skip
    if "torch_build" in frame:
        builds = zip(frame["job_key"], labels, frame["torch_build"], strict=True)
        text += "".join(f" Warning: {line}." for line in torch_build_mismatches(list(builds)))
    return text


def runs_table(frame: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """Every run: its system, where its files are, job, seed, status, whether it replays a published run."""
    table = pd.DataFrame({"system": labels, "run directory": frame["run"],
                          "job": frame["job_key"].map(findings.short), "seed": frame["seed"].map(findings.seed_text),
                          "status": frame["status"]})  # fmt: skip
    marks = replay.published_marks(frame)
    if marks is not None:
        table["published"] = marks
    table["data fingerprint"] = frame["fingerprint"].fillna("").replace("", NONE)
    return table.reset_index(drop=True)


TIME_TO_QUALITY_NOTE = (
    "The held-out answer loss is taken every `eval.every_steps` optimizer steps during training (the same rows "
    "and evaluator for every framework). Time to target is wall time from the start of training until the "
    "first evaluation at or below `eval.target_loss`, the evaluations included, as MLPerf Training's LoRA "
    "benchmark counts it (it ranks systems by time to a target held-out loss); model loading and data "
    "preparation before training are not on this clock, and the evaluations are kept off the step times "
    "that throughput is taken from (`train_eval_s` is their total)."
)


def time_to_quality(frame: pd.DataFrame, labels: pd.Series | None = None) -> pd.DataFrame | None:
    """Per run that evaluated during training: the target, time and steps to reach it, or "not reached"."""
    if frame.get("job.eval.target_loss", pd.Series(dtype=float)).isna().all():
        return None
    labels = frame["system"] if labels is None else labels
    ok = frame[(frame["status"] == "ok") & frame["job.eval.target_loss"].notna()]
    m = ok.reindex(columns=["time_to_target_s", "steps_to_target", "train_eval_s"])
    reached = m["time_to_target_s"].notna()
    return pd.DataFrame({
        "system": labels[ok.index],
        "target loss (nats)": ok["job.eval.target_loss"].map(num),
        "time to target (s)": m["time_to_target_s"].map(num).where(reached, "not reached"),
        "steps to target": m["steps_to_target"].map(num).where(reached, "not reached"),
        "evaluations (s)": m["train_eval_s"].map(num),
    }).reset_index(drop=True)  # fmt: skip


def metric_legend() -> pd.DataFrame:
    """Unit and direction of each metric the tables show."""
    better = {True: "higher", False: "lower", None: "-"}
    rows = [{"metric": m.name, "unit": m.unit, "better": better[m.higher_is_better]}
            for m in registry.METRICS.values() if "table" in m.shown]  # fmt: skip
    return pd.DataFrame(rows)


# The report


def base_line(r: RunsTable) -> str | None:
    """The base model's held-out quality (evaluated once per sweep, in its first run): the reference point."""
    lines = []
    for prefix in r.sweeps:
        run = next((run for name, run in r.by_name.items() if name.startswith(prefix) and run.summary.base_quality),
                   None)  # fmt: skip
        if run is not None:
            base = run.summary.base_quality
            scores = (f"held-out loss {base['heldout_loss']:.4g}, ROUGE-L {base['rouge_l']:.4g}, "
                      f"BLEU-4 {base['bleu4']:.4g}")  # fmt: skip
            lines.append(f"Base model before fine-tuning (evaluated in {run.name}): {scores}.")
    return " ".join(lines) or None


def frontier_section(sweep_dir: Path) -> tuple[pd.DataFrame, str, list[str]] | None:
    """A memory-frontier sweep's table (bench.frontier), how its budgets were applied and its findings."""
    found = frontier_table.load(sweep_dir)
    if not found:
        return None
    return frontier_table.frame(found), " ".join(frontier_table.method(found)), findings.frontier_lines(found)


def findings_note(baseline: str) -> str:
    return (f"Each system against the baseline system of its job (the first {baseline} system to finish ok), over "
            "runs of one seed that trained on the same tokens; a ratio is system / baseline, so above 1x is more "
            "tokens/s, more memory, higher loss. 95 % CI: geometric mean, Student's t on the log ratios of the seed "
            "pairs.")  # fmt: skip


def speed_note(s: Systems) -> str:
    return ("Steady-state throughput (after `skip_steps`), mean ± 95 % CI half-width over seeds where a system has "
            "several; ratios are over seed pairs that trained on the same tokens, as `mean [95 % CI]`. A dash: "
            "no value (the findings say why)." + ("" if s.several_jobs else f" One job: {one_job(s)}."))  # fmt: skip


def one_job(s: Systems) -> str:
    return ", ".join(findings.short(k) for k in dict.fromkeys(s.reps["job_key"]))


def system_sections(frame, reps, found, quality, base, baseline) -> list[Section]:
    """Speed, memory and quality: one row per system and job."""
    s = Systems.of(frame, reps, found)
    memory_note = ("Peak VRAM over the training steps, summed over the run's GPUs (how it was measured is in "
                   "runs.csv, `vram_method`); peak RSS of the worker's process tree over the whole run.")  # fmt: skip
    quality_note = " ".join(filter(None, [base, "Held-out loss is taken on the held-out split's answer tokens.",
                                          BLEU_NOTE]))  # fmt: skip
    out: list[Section] = [("Speed", speed_note(s), speed_table(s, baseline)),
                          ("Memory", memory_note, memory_table(s, baseline))]  # fmt: skip
    if base or any(c in frame and frame[c].notna().any() for c in ("heldout_loss", "rouge_l", "bleu4")):
        out.append(("Quality", quality_note, quality_table(s, quality, baseline)))
    return out


def sections(frame, labels, reps, found, quality, unreadable, base, front, baseline, lines, past) -> list[Section]:
    """The report's content once, findings first; markdown() and to_html() only render it."""
    out: list[Section] = [("Findings", findings_note(baseline), lines)]
    if front is not None:
        out.append(("Memory frontier (largest value that trains)", front[1], front[0]))
    if not reps.empty:
        out += system_sections(frame, reps, found, quality, base, baseline)
        ttq = time_to_quality(frame, labels)
        if ttq is not None:
            out.append(("Time to quality", TIME_TO_QUALITY_NOTE, ttq))
    if not frame.empty:
        sections = (history.section(past), replay.difference_section(frame, baseline),
                    replay.claims_section(frame), replay.not_as_published(frame), replay.published_figures(frame))
        out += [s for s in sections if s is not None]
    if not reps.empty:
        out.append(("Parity", parity_note(), parity_table(frame, labels)))
        out.append(("Conditions", conditions_text(frame, labels), conditions_table(frame)))
    if not frame.empty:
        out.append(("Runs", "Every run, by system. Every column of every run — config, versions, all metrics, "
                    "per-run ratios — is in runs.csv and runs.parquet beside this report.",
                    runs_table(frame, labels)))  # fmt: skip
        noted = frame[frame["notes"].fillna("") != ""] if "notes" in frame else frame.iloc[:0]
        if not noted.empty:
            out.append(("Run notes", "Where a framework did not follow the job to the letter, and what else qualifies "
                        "a run's numbers.", pd.DataFrame({
                            "system": labels[noted.index], "run directory": noted["run"],
                            "notes": noted["notes"].str.replace(NOTE_SEP, "; ", regex=False)})
                        .reset_index(drop=True)))  # fmt: skip
        bad = frame[frame["status"] != "ok"]
        if not bad.empty:
            out.append(("Runs that did not finish ok", None, pd.DataFrame({
                "system": labels[bad.index], "run directory": bad["run"], "status": bad["status"],
                "reason": bad["reason"]}).reset_index(drop=True)))  # fmt: skip
    if unreadable:
        out.append(("Skipped while building this report", None, pd.DataFrame(unreadable)))
    if not frame.empty:
        out.append(("Metrics", "As declared in bench/core/metrics.py.", metric_legend()))
    return out


def parity_note() -> str:
    return ("Each run against the first finished run of its job and seed: the same tokens (data fingerprint), "
            f"the step-1 loss (flagged above {STEP1_RTOL:g} relative), the loss curve over the steps after the "
            f"first real update (above {CURVE_RTOL:g}) and the padding share (above {100 * PADDING_TOL:g} "
            "point). Flags are in the findings.")  # fmt: skip


FIGURE_SECTION = {"throughput.svg": "Speed", "phases.svg": "Speed", "loss.svg": "Speed", "gpu_utilisation.svg": "Speed",
                  "memory.svg": "Memory", "quality.svg": "Quality",
                  "time_to_quality.svg": "Time to quality", "history.svg": "History"}  # fmt: skip


def group_labels(frame: pd.DataFrame, groups: pd.DataFrame) -> list[str]:
    """A per-system row's name in a figure: the system, with its job where the report covers several."""
    several = frame["job_key"].nunique(dropna=False) > 1
    return [f"{s} job {findings.short(k)}" if several else s for s, k in zip(groups["system"], groups["job_key"],
                                                                              strict=True)]  # fmt: skip


def throughput_groups(frame: pd.DataFrame, reps: pd.DataFrame) -> pd.DataFrame:
    g = reps.dropna(subset=["tokens_per_s_mean"]) if "tokens_per_s_mean" in reps else reps.iloc[0:0]
    return pd.DataFrame({"label": group_labels(frame, g), "system": g.get("system"), "mean": g.get("tokens_per_s_mean"),
                         "half": g.get("tokens_per_s_ci95"), "n": g.get("n")})  # fmt: skip


def phase_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """Per job and system, the mean time per steady step in each phase over its ok runs that measured them."""
    columns = [f"phase_{p}_ms" for p in registry.PHASES]
    if not set(columns) <= set(frame):
        return pd.DataFrame()
    ok = frame[(frame["status"] == "ok") & frame[columns].notna().all(axis=1)]
    g = ok.groupby(["job_key", "system"], sort=False, dropna=False)[columns].mean().reset_index()
    return g.assign(label=group_labels(frame, g)) if not g.empty else g


def rouge_groups(frame: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    if quality.empty:
        return pd.DataFrame()
    return pd.DataFrame({"label": group_labels(frame, quality), "system": quality["system"],
                         "diff": quality["rouge_l_minus_base"], "low": quality["ci95_low"],
                         "high": quality["ci95_high"]})  # fmt: skip


def heldout_groups(frame: pd.DataFrame, reps: pd.DataFrame) -> pd.DataFrame:
    cols = ["heldout_loss_mean", "base_heldout_loss_mean"]
    g = reps.dropna(subset=cols) if set(cols) <= set(reps) else reps.iloc[0:0]
    if g.empty:
        return pd.DataFrame()
    return pd.DataFrame({"label": group_labels(frame, g), "system": g["system"],
                         "diff": g["heldout_loss_mean"] - g["base_heldout_loss_mean"], "half": g["heldout_loss_ci95"]})


def figures(r: RunsTable, frame: pd.DataFrame, reps: pd.DataFrame, quality: pd.DataFrame,
            labels: pd.Series, past: list[history.Series]) -> dict[str, bytes]:  # fmt: skip
    """The SVG figures, by file name (FIGURE_SECTION places them); none without an ok run."""
    if reps.empty:
        return {}
    series = run_series(r.by_name, frame, labels)
    colour = plots.colours(list(frame["system"]))
    targets = list(frame.get("job.eval.target_loss", pd.Series(dtype=float)).dropna().unique())
    speed = throughput_groups(frame, reps)
    drawn = {
        "throughput.svg": plots.throughput(speed, colour) if not speed.empty else None,
        "phases.svg": plots.phases(phase_groups(frame)),
        "loss.svg": plots.loss(series, colour),
        "memory.svg": plots.memory(series, colour),
        "quality.svg": plots.quality(rouge_groups(frame, quality), heldout_groups(frame, reps), colour),
        "time_to_quality.svg": plots.time_to_quality(series, targets, colour),
        "gpu_utilisation.svg": plots.utilisation(series, colour),
        "history.svg": plots.history(past) if past else None,
    }
    return {name: svg for name, svg in drawn.items() if svg is not None}


@dataclass
class Report:
    """One report, composed once: markdown(), to_html() and the end of a sweep render it."""

    title: str
    frame: pd.DataFrame  # every run, every column: runs.csv
    findings: list[str]
    content: list[Section]
    figures: dict[str, bytes]  # SVG by file name


def report_title(sweep_dir: Path, frame: pd.DataFrame, others: Sequence[Path] = ()) -> str:
    """The sweeps' names and the scenario(s) their runs started from (conf/scenario/), where any did."""
    names = sorted({s for s in frame.get("scenario", []) if isinstance(s, str)})
    sweeps = " + ".join(s.name for s in (sweep_dir, *others))
    return f"sftbench report: {sweeps}" + (f" (scenario: {', '.join(names)})" if names else "")


def compose(sweep_dir: Path, baseline: str = config.default_baseline(), others: Sequence[Path] = ()) -> Report:
    """The report over `sweep_dir`'s runs and those of the `others` sweeps."""
    r = runs.load(sweep_dir, others)
    frame, unreadable = with_ratios(r.frame, baseline), r.unreadable
    reps = repeats(frame) if not frame.empty else pd.DataFrame()
    found = findings.comparisons(frame, baseline)
    front = frontier_section(sweep_dir)
    lines = findings.lines(frame, found) if front is None or not frame.empty else []  # a frontier sweep: no runs
    lines = [*(front[2] if front else []), *lines, *findings.unreadable_line(unreadable)]
    quality = quality_differences(r) if not frame.empty else pd.DataFrame()
    labels = findings.run_labels(frame) if not frame.empty else pd.Series(dtype=object)
    past = history.in_sweep(frame) if not frame.empty else []  # one framework's releases or commits, in order
    content = sections(frame, labels, reps, found, quality, unreadable, base_line(r), front, baseline, lines, past)
    images = figures(r, frame, reps, quality, labels, past)
    return Report(report_title(sweep_dir, frame, others), frame, lines, content, images)


def findings_block(r: Report) -> str:
    """The findings as the end of a sweep prints them: the same lines as the report's first section."""
    _, note, lines = next(section for section in r.content if section[0] == "Findings")
    return "\n".join([f"Findings: {note}", *(f"- {line}" for line in lines)])


def md_escape(text: str) -> str:
    """Text the report did not write (sweep and run names, reasons, notes, overrides) as Markdown shows it, not
    as markup: HTML characters escaped, so a name such as `<img src=x onerror=...>` is only text."""
    return html.escape(text, quote=False)


def markdown(r: Report) -> str:
    parts = [f"# {md_escape(r.title)}", ""]
    for heading, text, body in r.content:
        parts += [f"## {heading}", ""] + ([text, ""] if text else [])
        if isinstance(body, list):
            parts += [f"- {md_escape(line)}" for line in body] + [""]
        elif body is not None and not body.empty:
            parts += [markdown_table(body), ""]
        parts += [f"![{name}]({name})\n" for name, section in FIGURE_SECTION.items()
                  if section == heading and name in r.figures]  # fmt: skip
    return "\n".join(parts) + "\n"


def markdown_table(df: pd.DataFrame) -> str:
    """The table as its cells read (no reformatting of `1,234` or `1.30x`), numbers right-aligned."""
    cells = df.astype(object).where(df.notna(), NONE).astype(str).map(md_escape)
    align = ["right" if cells[c].map(is_numeric).all() else "left" for c in cells]
    return cells.to_markdown(index=False, disable_numparse=True, colalign=align)


def is_numeric(text: str) -> bool:
    return text == NONE or NUMERIC.match(text) is not None


NUMERIC = re.compile(r"^[+\-−]?[\d,.]+(e[+-]?\d+)?(x| ±|$| \[| \()")
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;line-height:1.4}"
    "table{border-collapse:collapse;font-size:13px;margin:.4em 0 1em}"
    "th{text-align:left;background:#f4f4f4}td,th{padding:3px 8px;border-bottom:1px solid #ddd;vertical-align:top;"
    "overflow-wrap:anywhere}td.num{text-align:right;white-space:nowrap}"
    "#findings li{margin:.35em 0}figure{margin:1em 0}figure svg{max-width:100%;height:auto}"
)


def html_table(df: pd.DataFrame) -> str:
    """A table with numbers right-aligned; every cell escaped."""
    def cell(value: Any) -> str:
        text = NONE if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
        return f"<td class='num'>{html.escape(text)}</td>" if is_numeric(text) else f"<td>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def inline_svg(data: bytes) -> str:
    """An SVG file as markup inside HTML: without its XML prolog, metadata and namespace declarations (the
    HTML parser supplies them), so the page names no URL."""
    text = data.decode()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    return re.sub(r'\sxmlns(:\w+)?="[^"]*"', "", text)


def code_spans(escaped: str) -> str:
    """`name` in a paragraph (Markdown's code) as <code>name</code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


def to_html(r: Report) -> str:
    """A self-contained page: findings first, tables as HTML, figures as inline SVG; no network needed."""
    body = [f"<h1>{html.escape(r.title)}</h1>"]
    for heading, text, content in r.content:
        part = [f"<h2>{html.escape(heading)}</h2>"] + ([f"<p>{code_spans(html.escape(text))}</p>"] if text else [])
        if isinstance(content, list):
            part.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in content) + "</ul>")
        elif content is not None and not content.empty:
            part.append(html_table(content))
        for name, section in FIGURE_SECTION.items():
            if section == heading and name in r.figures:
                part.append(f"<figure id='{slug(name)}'>{inline_svg(r.figures[name])}</figure>")
        body.append(f"<section id='{slug(heading)}'>{''.join(part)}</section>")
    head = f"<meta charset='utf-8'><title>{html.escape(r.title)}</title><style>{STYLE}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>\n"


def write(r: Report, sweep_dir: Path) -> dict[str, Path]:
    """runs.csv, runs.parquet, report.md (+ its SVG figures) and report.html, written atomically."""
    frame = r.frame
    with results.atomic_path(sweep_dir / "runs.csv") as tmp:
        csv_safe(frame).to_csv(tmp, index=False)
    with results.atomic_path(sweep_dir / "runs.parquet") as tmp:
        frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object}).to_parquet(tmp, index=False)
    for name, svg in r.figures.items():
        with results.atomic_path(sweep_dir / name) as tmp:
            tmp.write_bytes(svg)
    results.write_text_atomic(sweep_dir / "report.md", markdown(r))
    results.write_text_atomic(sweep_dir / "report.html", to_html(r))
    return {n: sweep_dir / n for n in ("runs.csv", "runs.parquet", "report.md", "report.html")}


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may read as the start of a formula


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """The table for runs.csv with text cells that a spreadsheet would run as a formula neutralised, as OWASP's
    CSV-injection guidance says: a leading ' (numbers, and the parquet file, untouched)."""
    def cell(value: Any) -> Any:
        return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value

    return frame.astype(object).map(cell) if not frame.empty else frame


def build(sweep_dir: Path, baseline: str = config.default_baseline(), others: Sequence[Path] = ()) -> dict[str, Path]:
    """Write runs.csv, runs.parquet, report.md (+ figures) and report.html into `sweep_dir`, over its runs and
    those of the `others` sweeps."""
    return write(compose(sweep_dir, baseline, others), sweep_dir)


def not_a_sweep(path: Path) -> str | None:
    """Why `path` is no sweep directory, or None: a sweep is a directory that is empty (no runs yet) or holds
    Hydra's multirun.yaml, a report, or a run directory with any of a run's files."""
    if not path.is_dir():
        return "not a sweep directory"
    try:
        entries = list(path.iterdir())
        if not entries or any((path / n).exists() for n in ("multirun.yaml", "runs.csv", "report.md")):
            return None
        marks = (*results.RUN_FILES, results.FRONTIER, ".hydra", results.LOCK)
        if any(any((d / m).exists() for m in marks) for d in results.run_dirs(path)):
            return None
    except OSError as e:
        return f"not readable ({e.strerror or e})"
    return "not a sweep directory (no multirun.yaml and no run directory in it)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Build a sweep's report from its runs (and other sweeps' runs, named by their sweep).",
        epilog="examples: python -m bench.report results/<sweep> --baseline llamafactory; "
        "python -m bench.report results/<published runs> results/<one job> (written into the first)",
    )
    ap.add_argument("sweep_dir", type=Path, help="the sweep the report is written into")
    ap.add_argument("others", type=Path, nargs="*", help="other sweeps whose runs the report covers too")
    ap.add_argument("--baseline", default=config.default_baseline(),  # conf/config.yaml report.baseline
                    help="framework the ratios are taken against (default: %(default)s)")
    a = ap.parse_args(argv)
    for d in (a.sweep_dir, *a.others):
        if problem := not_a_sweep(d):
            print(f"error: {d}: {problem}", file=sys.stderr)
            return 2
    try:
        built = compose(a.sweep_dir, a.baseline, a.others)
        paths = write(built, a.sweep_dir)
    except (UserError, OSError) as e:  # a full disk (DiskFull), an unwritable directory: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(findings_block(built))  # what the sweep printed at its end, for this baseline
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
