"""Sweep reports: a pandas table of every run, Markdown and self-contained HTML with plots.

    python -m bench.report results/<sweep> [results/<other sweep> ...] [--baseline trl]

Writes runs.csv, runs.parquet, report.md (with PNG plots beside it) and report.html (plots inlined) into the
(first) sweep directory. Runs whose summary is missing or unreadable are listed with the reason, never fatal.
Other sweeps' runs join the report, each run named `<sweep directory>/<run>` (a sweep of published runs next
to one of the same frameworks on one job: bench.replay).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench import config, frontier_table, measure, replay, results  # noqa: E402
from bench import metrics as registry  # noqa: E402
from bench.errors import UserError  # noqa: E402
from bench.runners.base import STACK  # noqa: E402
from bench.spec import flatten  # noqa: E402
from bench.summary import (  # noqa: E402
    SHARED_CPU_CORES,
    loss_curves,
    parity,
    shared_machine,
    torch_build,
    torch_build_mismatches,
)

RUN_METRICS = registry.shown("runs")
REPEATED = ("tokens_per_s", "peak_vram_mb", "peak_rss_mb")  # shown with mean, 95 % CI and CV over seeds
RATIOS = ("tokens_per_s", "peak_vram_mb", "peak_rss_mb")  # against the baseline framework's run of the same job
PARITY = ("same_tokens", "step1_loss_rel_diff", "curve_loss_rel_diff", "curve_steps", "padding_diff")
BOOTSTRAP = 2000  # resamples of the evaluated prompts for a quality difference's 95 % interval
BLEU_NOTE = (
    "BLEU-4 is sacrebleu's corpus BLEU (zh tokenizer) with its default exponential smoothing: where no "
    "4-gram matches (bleu4_4gram_matches = 0) the score is smoothing alone. ROUGE-L is character-level F1. "
    "A quality difference is called one only when its 95 % bootstrap interval over the evaluated prompts "
    "excludes zero."
)


Section = tuple[str, str | None, pd.DataFrame | None]  # heading, a paragraph, a table
SHARED_NOTE = f"{SHARED_CPU_CORES:.0%} of one core taken by other processes, or another process on its GPU"


def version_columns() -> list[str]:
    """The shared training stack, then every registered framework's own packages (conf/framework/)."""
    packages = list(STACK)
    for facts in config.frameworks().values():
        packages += [facts["distribution"], *facts["packages"]]
    return list(dict.fromkeys(packages))


def _spec_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The run's spec.json as `job.train.lr`-style columns (whatever its harness version wrote); paths and the
    model's architecture left out."""
    sections = {k: spec[k] for k in ("model", "data", "train", "evaluation") if isinstance(spec.get(k), dict)}
    return {
        f"job.{k}": ",".join(map(str, v)) if isinstance(v, list) else v
        for k, v in flatten(sections).items()
        if not k.endswith(("_files", ".config"))
    }


def device_of(hardware: dict[str, Any] | None) -> str | None:
    """The GPU a run trained on, "cpu" without one, None where the run never reported its hardware."""
    if not hardware:
        return None
    gpus = hardware.get("gpus") or []
    return gpus[0]["name"] if gpus else "cpu"


def machine_columns(summary: dict[str, Any]) -> dict[str, Any]:
    """What machine and torch a run measured, and whether it had that machine to itself (summary `host`,
    `hardware`, `versions` and the host-load metrics)."""
    host, hw = summary.get("host") or {}, summary.get("hardware") or {}
    ram_mb = host.get("ram_mb")
    return {
        "torch_build": torch_build(summary),
        "cpu_model": host.get("cpu_model") or hw.get("cpu"),
        "cpu_cores": host.get("cpu_cores") or hw.get("cpu_count"),
        "ram_gb": None if ram_mb is None else round(ram_mb / 1024, 1),
        "gpu_driver": host.get("gpu_driver"),
        "shared_machine": shared_machine(summary.get("metrics") or {}),
    }


HARDWARE = ("framework", "framework_version", "torch_build", "device", "gpu_driver", "cpu_model", "cpu_cores", "ram_gb")


def trust_sections(frame: pd.DataFrame) -> list[Section]:
    """How far the runs' numbers can be trusted: runs that shared their machine while training, and the
    hardware and torch build behind each framework's runs (flagging one job run on different torch builds)."""
    out: list[Section] = []
    shared = frame[frame["shared_machine"].notna()] if "shared_machine" in frame else frame.iloc[0:0]
    if not shared.empty:
        text = (f"Other work ran on the machine while these runs trained (more than {SHARED_NOTE}): their speed "
                "is not the framework's alone.")  # fmt: skip
        out.append(("Runs that shared their machine", text, shared[["run", "framework", "shared_machine"]]))
    cols = [c for c in HARDWARE if c in frame]
    if "torch_build" in frame:
        hardware = frame.groupby(cols, dropna=False, sort=False)["run"].agg(", ".join).reset_index()
        builds = zip(frame["job_key"], frame["run"], frame["torch_build"], strict=True)
        text = " ".join(f"Warning: {line}." for line in torch_build_mismatches(list(builds))) or None
        out.append(("Hardware", text, hardware.rename(columns={"run": "runs"})))
    return out


def sweeps_of(sweep_dir: Path, others: Sequence[Path] = ()) -> dict[str, Path]:
    """The sweeps a report covers, by the prefix their runs' names take: none with one sweep (its runs keep
    their names); with several, the sweep directory's name, so that run names stay unique across them."""
    if not others:
        return {"": sweep_dir}
    sweeps = [sweep_dir, *others]
    names = [s.resolve().name for s in sweeps]
    if len(set(names)) < len(names):
        raise UserError(f"sweeps {', '.join(map(str, sweeps))}: two share a directory name, which names their runs")
    return {f"{name}/": s for name, s in zip(names, sweeps, strict=True)}


def locate(sweeps: dict[str, Path], run: str) -> tuple[str, Path]:
    """The prefix of a run's sweep (sweeps_of) and the run's directory."""
    prefix = next(p for p in sweeps if run.startswith(p))
    return prefix, sweeps[prefix] / run.removeprefix(prefix)


def published_columns(summary: dict[str, Any]) -> dict[str, Any]:
    """Whether the run replays a published run and what this host left out of it (bench.published), the
    claims its scenario carries (JSON, checked by bench.replay) and the steps it trained."""
    published = summary.get("published") or {}
    return {
        "published_source": published.get("source"),
        "as_published": published.get("as_published"),
        "left_out": "; ".join(published.get("left_out") or []),
        "claims": json.dumps(summary["claims"]) if summary.get("claims") else None,
        "trained_steps": (summary.get("effective") or {}).get("max_steps"),
    }


def load_runs(sweep_dir: Path, others: Sequence[Path] = ()) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """One row per run that has a readable summary; the others as (run, why) for the report. With other
    sweeps, their runs too, each run named by its sweep (sweeps_of)."""
    rows, unreadable, summaries, curves = [], [], [], {}
    for prefix, sweep in sweeps_of(sweep_dir, others).items():
        its_rows, its_unreadable, its_summaries = _sweep_runs(sweep)
        curves |= {prefix + run: events for run, events in loss_curves(sweep, its_summaries).items()}
        for item in [*its_rows, *its_unreadable, *its_summaries]:
            item["run"] = prefix + item["run"]
        rows, unreadable, summaries = rows + its_rows, unreadable + its_unreadable, summaries + its_summaries
    frame = pd.DataFrame(rows)
    if not frame.empty:
        checks = parity(summaries, curves)
        for col in PARITY:
            frame[col] = [p.get(col) for p in checks]
    return frame, unreadable


def _sweep_runs(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[dict[str, Any]]]:
    """One sweep's rows, its runs without a readable summary (run, why), and its summaries."""
    rows, unreadable, summaries = [], [], []
    versions = version_columns()
    for run_dir in results.run_dirs(sweep_dir):
        summary = results.read_json(run_dir / results.SUMMARY)
        if summary is None and (run_dir / results.FRONTIER).exists():
            continue  # a frontier search: its probes are reported as the frontier table
        if summary is None:
            missing = not (run_dir / results.SUMMARY).exists()
            unreadable.append({"run": run_dir.name, "why": "no summary.json (did not finish)" if missing else
                               "unreadable summary.json"})  # fmt: skip
            continue
        summary.setdefault("run", run_dir.name)
        summaries.append(summary)
        spec = results.read_json(run_dir / results.SPEC) or {}
        m, q = summary.get("metrics", {}), summary.get("quality", {})
        row = {
            "run": summary["run"],
            # The system under test: `trl`, or `trl+liger` with train.kernels (its own rows, groups and ratios).
            "framework": summary.get("system") or summary.get("framework"),
            "framework_version": summary.get("framework_version"),
            "job_key": summary.get("job_key"),
            "seed": summary.get("seed"),
            "scenario": summary.get("scenario"),  # conf/scenario/ preset, shown in the header
            "status": summary.get("status"),
            "reason": summary.get("reason", ""),
            "model": (spec.get("model") or {}).get("name"),
            "dataset": (spec.get("data") or {}).get("name"),
            "precision": (summary.get("effective") or {}).get("precision"),
            "device": device_of(summary.get("hardware")),
            **machine_columns(summary),
            "train_examples": (summary.get("effective") or {}).get("train_examples"),
            **published_columns(summary),
            **{n: (q if registry.get(n).source == "quality" else m).get(n) for n in RUN_METRICS},
            "base_heldout_loss": (summary.get("base_quality") or {}).get("heldout_loss"),
            "heldout_overlap_with_train": ((summary.get("data") or {}).get("heldout") or {}).get("overlap_with_train"),
            "fingerprint": (summary.get("fingerprint") or {}).get("first_batches_sha256", "")[:12],
            **{f"v_{p}": (summary.get("versions") or {}).get(p) for p in versions},
            "git_commit": summary.get("git_commit"),
            **_spec_fields(spec),
        }
        rows.append(row)
    return rows, unreadable, summaries


def repeats(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, 95 % confidence interval (Student's t) and coefficient of variation over runs that differ only
    by seed: the same job key, framework and version."""
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    out = []
    keys = ["framework", "framework_version", "job_key"]
    for (framework, version, job), group in ok.groupby([ok[k].astype("string").fillna("-") for k in keys]):
        row = {"framework": framework, "framework_version": version, "job_key": job, "n": len(group)}
        row["seeds"] = ",".join(str(s) for s in group["seed"]) if "seed" in group else "-"
        for col in REPEATED:
            values = group[col].dropna().astype(float) if col in group else pd.Series(dtype=float)
            if values.empty:
                continue
            mean, half = replay.t_interval(list(values))
            sd = values.std(ddof=1) if len(values) > 1 else math.nan
            row |= {f"{col}_mean": mean, f"{col}_ci95": half, f"{col}_cv": sd / mean if mean else math.nan}
        out.append(row)
    return pd.DataFrame(out)


def with_ratios(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each ok run's throughput and memory over its reference: the first ok run of the baseline framework with
    the same job key and seed. Where there is none, or it trained on other tokens, the ratio is left empty
    and `vs_<baseline>` says why."""
    ok = frame[frame["status"] == "ok"].copy()
    if ok.empty:
        return ok
    note = f"vs_{baseline}"
    ok[note] = ""
    for col in RATIOS:
        ok[f"{col}_vs_{baseline}"] = math.nan
    base = ok[ok["framework"] == baseline]
    for i, run in ok.iterrows():
        ref = base[(base["job_key"] == run["job_key"]) & (base["seed"] == run["seed"])]
        if run["job_key"] is None or ref.empty:
            ok.at[i, note] = f"no {baseline} run of this job"
            continue
        ref = ref.iloc[0]
        if run["fingerprint"] != ref["fingerprint"]:
            ok.at[i, note] = f"not comparable: other tokens than {ref['run']}"
            continue
        ok.at[i, note] = f"against {ref['run']}"
        for col in RATIOS:
            if col in ok and pd.notna(run[col]) and pd.notna(ref[col]) and ref[col]:
                ok.at[i, f"{col}_vs_{baseline}"] = float(run[col]) / float(ref[col])
    return ok


def base_scores(sweep_dir: Path) -> dict[str, float]:
    """The base model's ROUGE-L per prompt, from the sweep's first run that evaluated it."""
    for run_dir in results.run_dirs(sweep_dir):
        base = {g["prompt"]: g["rouge_l"] for g in results.read_jsonl(run_dir / results.BASE_GENERATIONS)
                if "rouge_l" in g}  # fmt: skip
        if base:
            return base
    return {}


def quality_differences(sweep_dir: Path, frame: pd.DataFrame, others: Sequence[Path] = ()) -> pd.DataFrame:
    """Per run, ROUGE-L after training minus the base model's (of its own sweep) on the same prompts, with a
    paired bootstrap 95 % interval over the prompts; a difference is called one only when the interval
    excludes zero."""
    sweeps = sweeps_of(sweep_dir, others)
    bases = {prefix: base_scores(sweep) for prefix, sweep in sweeps.items()}
    rows = []
    ok = frame[frame["status"] == "ok"] if not frame.empty else frame
    for run in ok["run"] if not ok.empty else []:
        prefix, run_dir = locate(sweeps, run)
        base = bases[prefix]
        gens = [g for g in results.read_jsonl(run_dir / results.GENERATIONS) if g.get("prompt") in base]
        diffs = np.array([g["rouge_l"] - base[g["prompt"]] for g in gens if "rouge_l" in g])
        if diffs.size == 0:
            continue
        rng = np.random.default_rng(0)
        means = diffs[rng.integers(0, diffs.size, (BOOTSTRAP, diffs.size))].mean(axis=1)
        lo, hi = np.percentile(means, [2.5, 97.5])
        verdict = "better than base" if lo > 0 else "worse than base" if hi < 0 else "no difference (CI spans 0)"
        rows.append({"run": run, "prompts": diffs.size, "rouge_l_minus_base": diffs.mean(), "ci95_low": lo,
                     "ci95_high": hi, "verdict": verdict})  # fmt: skip
    return pd.DataFrame(rows)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plots(sweep_dir: Path, frame: pd.DataFrame, others: Sequence[Path] = ()) -> dict[str, bytes]:
    """PNG plots: loss curves, memory timeline, throughput and quality bars (where there is data)."""
    sweeps = sweeps_of(sweep_dir, others)

    def run_dir(run: str) -> Path:
        return locate(sweeps, run)[1]

    out: dict[str, bytes] = {}
    ok = frame[frame["status"] == "ok"] if not frame.empty else frame
    if ok.empty:
        return out
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in ok["run"]:
        events = results.read_jsonl(run_dir(run) / results.EVENTS)
        ax.plot([e["step"] for e in events], [e.get("loss") for e in events], label=run)
    ax.set(xlabel="step", ylabel="training loss", title="Loss curves")
    ax.legend(fontsize=7)
    out["loss_curves.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in ok["run"]:
        samples = results.read_jsonl(run_dir(run) / results.SAMPLES)
        baseline = ((results.read_json(run_dir(run) / results.SUMMARY) or {}).get("sampler") or {}).get(
            "baseline_used_mb"
        )
        # The quantity the peak-memory metric takes its maximum of, by the same method.
        vram, method = measure.vram_per_gpu(samples, baseline)
        if vram:
            ts = [s["t"] for s in samples if s.get("gpus")]
            ys, label = [sum(r) for r in vram], f"VRAM MiB, {method}"
        else:
            ts, ys, label = [s["t"] for s in samples], [s["rss_mb"] for s in samples], "RSS MiB"
        ax.plot(ts, ys, label=f"{run} ({label})")
    ax.set(xlabel="seconds since the worker started", ylabel="MB", title="Memory timeline")
    ax.legend(fontsize=7)
    out["memory_timeline.png"] = _png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(ok["run"], ok["tokens_per_s"].fillna(0))
    axes[0].set(title="Throughput", ylabel="tokens/s")
    quality = ok[["run", "rouge_l", "bleu4"]].set_index("run").astype(float)
    if quality.notna().any().any():
        quality.plot.bar(ax=axes[1], title="Held-out quality")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    out["throughput_quality.png"] = _png(fig)

    evaluated = {run: [e for e in results.read_jsonl(run_dir(run) / results.EVENTS) if "heldout_loss" in e]
                 for run in ok["run"]}  # fmt: skip
    if any(evaluated.values()):
        fig, ax = plt.subplots(figsize=(7, 4))
        for (run, events), system in zip(evaluated.items(), ok["framework"], strict=True):
            x, y = [e["elapsed_s"] for e in events], [e["heldout_loss"] for e in events]
            ax.plot(x, y, marker=".", label=f"{run} {system}")
        targets = ok.get("job.evaluation.target_loss", pd.Series(dtype=float)).dropna().unique()
        for target in targets:
            ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
        ax.set(xlabel="seconds since training began (evaluations included)", ylabel="held-out answer loss",
               title="Time to quality")  # fmt: skip
        ax.legend(fontsize=7)
        out["time_to_quality.png"] = _png(fig)
    return out


TIME_TO_QUALITY_NOTE = (
    "The held-out answer loss is taken every `eval.every_steps` optimizer steps during training (the same rows "
    "and evaluator for every framework). Time to target is wall time from the start of training until the "
    "first evaluation at or below `eval.target_loss`, the evaluations included, as MLPerf Training's LoRA "
    "benchmark counts it (it ranks systems by time to a target held-out loss); model loading and data "
    "preparation before training are not on this clock, and the evaluations are kept off the step times "
    "that throughput is taken from (`train_eval_s` is their total)."
)


def time_to_quality(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Per run that evaluated during training: the target, time and steps to reach it, or "not reached"."""
    if frame.get("job.evaluation.target_loss", pd.Series(dtype=float)).isna().all():
        return None
    cols = ["run", "framework", "job.evaluation.target_loss", "time_to_target_s", "steps_to_target", "train_eval_s"]
    ok = frame[(frame["status"] == "ok") & frame["job.evaluation.target_loss"].notna()].reindex(columns=cols)
    reached = ok["time_to_target_s"].notna()
    for col in ("time_to_target_s", "steps_to_target"):
        ok[col] = ok[col].astype(object).where(reached, "not reached")
    return ok.rename(columns={"job.evaluation.target_loss": "target_loss"})


IDENTITY = ("run", "framework", "framework_version", "job_key", "seed", "status")


def summary_table(frame: pd.DataFrame, ratios: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader compares first, with the ratios against the baseline framework's run of the same
    job; where a ratio cannot be taken its cell says why."""
    table = (ratios if not ratios.empty else frame).copy()
    marks = replay.published_marks(table)
    if marks is not None:
        table["published"] = marks
    notes = [c for c in table if c.startswith("vs_")]
    for note in notes:
        for col in [c for c in table if c.endswith(f"_{note}")]:
            table[col] = [f"{v:.3g}x" if pd.notna(v) else n for v, n in zip(table[col], table[note], strict=True)]
    cols = [*IDENTITY, "published", *registry.shown("table"), "base_heldout_loss", "fingerprint", *PARITY]
    cols = [c for c in cols if c in table] + [c for c in table if "_vs_" in c]
    return table[cols].dropna(axis=1, how="all")


def base_line(sweep_dir: Path, others: Sequence[Path] = ()) -> str | None:
    """The base model's held-out quality (evaluated once per sweep, in its first run): the reference point."""
    lines = [line for prefix, sweep in sweeps_of(sweep_dir, others).items() if (line := _base_line(sweep, prefix))]
    return " ".join(lines) or None


def _base_line(sweep_dir: Path, prefix: str) -> str | None:
    for run_dir in results.run_dirs(sweep_dir):
        base = (results.read_json(run_dir / results.SUMMARY) or {}).get("base_quality")
        if base:
            scores = (
                f"held-out loss {base['heldout_loss']:.4g}, ROUGE-L {base['rouge_l']:.4g}, BLEU-4 {base['bleu4']:.4g}"
            )
            return f"Base model before fine-tuning (evaluated in {prefix}{run_dir.name}): {scores}"
    return None


def frontier_section(sweep_dir: Path) -> tuple[pd.DataFrame, str] | None:
    """A memory-frontier sweep's table (bench.frontier) and how its budgets were applied, when this is one."""
    found = frontier_table.load(sweep_dir)
    return (frontier_table.frame(found), " ".join(frontier_table.method(found))) if found else None


def sections(frame, ratios, reps, quality, unreadable, base, front, baseline) -> list[Section]:
    """The report's content once; markdown() and to_html() only render it."""
    out: list[Section] = [("", base, None)] if base else []
    if front is not None:
        out.append(("Memory frontier (largest value that trains)", front[1], front[0]))
    if frame.empty:
        out.append(("", "No finished runs in this sweep.", None))
    else:
        out.append(("Runs", f"Ratios are taken against the {baseline} run of the same job and seed, only where "
                    "both trained on the same tokens (fingerprint).", summary_table(frame, ratios)))  # fmt: skip
        out += [s for s in (replay.not_as_published(frame), replay.difference_section(frame, baseline),
                            replay.claims_section(frame)) if s is not None]  # fmt: skip
        out += trust_sections(frame)
        if not reps.empty and (reps["n"] > 1).any():
            out.append(("Repeats (mean, 95 % CI half-width, CV)", "Runs of one job, framework and version that "
                        "differ only by seed.", reps))  # fmt: skip
        ttq = time_to_quality(frame)
        if ttq is not None:
            out.append(("Time to quality", TIME_TO_QUALITY_NOTE, ttq))
        if any(c in frame and frame[c].notna().any() for c in ("rouge_l", "bleu4")):
            out.append(("Quality", BLEU_NOTE, quality if not quality.empty else None))
        bad = frame[frame["status"] != "ok"]
        if not bad.empty:
            out.append(("Runs that did not finish ok", None, bad[["run", "framework", "status", "reason"]]))
    if unreadable:
        out.append(("Skipped while building this report", None, pd.DataFrame(unreadable)))
    if not frame.empty:
        out.append(("Metrics", "As declared in bench/metrics.py.", metric_legend()))
    return out


def metric_legend() -> pd.DataFrame:
    """Unit and direction of each metric in the runs table."""
    better = {True: "higher", False: "lower", None: "-"}
    rows = [{"metric": m.name, "unit": m.unit, "better": better[m.higher_is_better]}
            for m in registry.METRICS.values() if "table" in m.shown]  # fmt: skip
    return pd.DataFrame(rows)


def markdown(title: str, content: list[Section], images: dict[str, bytes]) -> str:
    parts = [f"# {title}", ""]
    for heading, text, df in content:
        parts += ([f"## {heading}", ""] if heading else []) + ([text, ""] if text else [])
        parts += [df.to_markdown(index=False, floatfmt=".4g"), ""] if df is not None else []
    parts += [f"![{name}]({name})" for name in images]
    return "\n".join(parts) + "\n"


def to_html(title: str, content: list[Section], images: dict[str, bytes], frame: pd.DataFrame) -> str:
    """A self-contained page: tables as HTML, plots as inline PNG data URIs, no network needed."""

    def table(df: pd.DataFrame) -> str:
        return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-", border=0)

    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, text, df in content:
        body += ([f"<h2>{html.escape(heading)}</h2>"] if heading else []) + ([f"<p>{html.escape(text)}</p>"] if text
                                                                           else [])  # fmt: skip
        body += [table(df)] if df is not None else []
        if heading == "Runs":
            body += ["<details><summary>All columns (runs.csv)</summary>", table(frame), "</details>"]
    for name, png in images.items():
        data = base64.b64encode(png).decode()
        body.append(
            f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'
        )
    style = (
        "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;font-size:12px}"
        " td,th{padding:2px 6px;border-bottom:1px solid #ddd}"
    )
    # Marks on <body> what actually rendered, for a headless browser to read back (tests/test_report_html.py).
    script = (
        "<script>addEventListener('load',()=>{const b=document.body,i=[...document.images];"
        "b.dataset.tables=document.querySelectorAll('table').length;b.dataset.images=i.length;"
        "b.dataset.imagesLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length;})</script>"
    )
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>{script}"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>\n"


def report_title(sweep_dir: Path, frame: pd.DataFrame, others: Sequence[Path] = ()) -> str:
    """The sweeps' names and the scenario(s) their runs started from (conf/scenario/), where any did."""
    names = sorted({s for s in frame.get("scenario", []) if isinstance(s, str)})
    sweeps = " + ".join(s.name for s in (sweep_dir, *others))
    return f"sftbench report: {sweeps}" + (f" (scenario: {', '.join(names)})" if names else "")


def build(sweep_dir: Path, baseline: str = "trl", others: Sequence[Path] = ()) -> dict[str, Path]:
    """Write runs.csv, runs.parquet, report.md (+ PNGs) and report.html into `sweep_dir`, over its runs and
    those of the `others` sweeps."""
    frame, unreadable = load_runs(sweep_dir, others)
    ratios = with_ratios(frame, baseline) if not frame.empty else frame
    reps = repeats(frame) if not frame.empty else pd.DataFrame()
    quality = quality_differences(sweep_dir, frame, others)
    images = plots(sweep_dir, frame, others)
    title = report_title(sweep_dir, frame, others)
    content = sections(frame, ratios, reps, quality, unreadable, base_line(sweep_dir, others),
                       frontier_section(sweep_dir), baseline)  # fmt: skip
    with results.atomic_path(sweep_dir / "runs.csv") as tmp:
        frame.to_csv(tmp, index=False)
    with results.atomic_path(sweep_dir / "runs.parquet") as tmp:
        frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object}).to_parquet(tmp, index=False)
    for name, png in images.items():
        with results.atomic_path(sweep_dir / name) as tmp:
            tmp.write_bytes(png)
    results.write_text_atomic(sweep_dir / "report.md", markdown(title, content, images))
    results.write_text_atomic(sweep_dir / "report.html", to_html(title, content, images, frame))
    return {n: sweep_dir / n for n in ("runs.csv", "runs.parquet", "report.md", "report.html")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Build a sweep's report from its runs (and other sweeps' runs, named by their sweep).",
        epilog="examples: python -m bench.report results/<sweep> --baseline llamafactory; "
        "python -m bench.report results/<published runs> results/<one job> (written into the first)",
    )
    ap.add_argument("sweep_dir", type=Path, help="the sweep the report is written into")
    ap.add_argument("others", type=Path, nargs="*", help="other sweeps whose runs the report covers too")
    ap.add_argument("--baseline", default="trl", help="framework the ratios are taken against (default: trl)")
    a = ap.parse_args(argv)
    missing = next((d for d in (a.sweep_dir, *a.others) if not d.is_dir()), None)
    if missing is not None:
        print(f"error: {missing}: not a sweep directory", file=sys.stderr)
        return 2
    try:
        paths = build(a.sweep_dir, a.baseline, a.others)
    except (UserError, OSError) as e:  # a full disk (DiskFull), an unwritable directory: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
