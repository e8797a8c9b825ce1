"""Sweep reports: a pandas table of every run, Markdown and self-contained HTML with plots.

    python -m bench.report results/<sweep> [--baseline trl]

Writes runs.csv, runs.parquet, report.md (with PNG plots beside it) and report.html (plots inlined) into the
sweep directory. Runs whose summary is missing or unreadable are listed with the reason, never fatal.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from bench import results  # noqa: E402
from bench.summary import parity  # noqa: E402

CONFIG_COLUMNS = {  # column -> path in spec.json
    "model": ("model", "name"),
    "dataset": ("data", "name"),
    "tokenize": ("data", "tokenize"),
    "lr": ("train", "lr"),
    "batch_size": ("train", "batch_size"),
    "grad_accum": ("train", "grad_accum"),
    "max_seq_len": ("train", "max_seq_len"),
    "max_steps": ("train", "max_steps"),
    "lora_r": ("train", "lora", "r"),
    "precision_asked": ("train", "precision"),
    "quant": ("train", "quant"),
    "seed": ("train", "seed"),
}
METRIC_COLUMNS = (
    "tokens_per_s", "tokens_per_s_per_gpu", "samples_per_s", "step_time_s_mean", "peak_vram_mb",
    "peak_vram_mb_per_gpu", "vram_method", "peak_rss_mb", "torch_max_allocated_mb", "energy_j_per_1k_tokens", "mfu",
    "first_loss", "final_loss", "wall_s", "train_s",
)  # fmt: skip
QUALITY_COLUMNS = ("heldout_loss", "heldout_ppl", "rouge_l", "bleu4")
VERSION_COLUMNS = ("torch", "transformers", "trl", "peft", "llamafactory", "unsloth")
FRONTIER_METHOD = "torch.cuda.set_per_process_memory_fraction(budget / card memory) in each probe's worker"
REPEATED = ("tokens_per_s", "peak_vram_mb", "peak_rss_mb")  # shown with mean, 95 % CI and CV over seeds


def _get(d: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def load_runs(sweep_dir: Path) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """One row per run that has a readable summary; the others as (run, why) for the report."""
    rows, unreadable = [], []
    summaries = []
    for run_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        summary = results.read_json(run_dir / results.SUMMARY)
        if summary is None and (run_dir / results.FRONTIER).exists():
            continue  # a frontier search: its probes are reported as the frontier table
        if summary is None:
            why = (
                "no summary.json (did not finish)"
                if not (run_dir / results.SUMMARY).exists()
                else "unreadable summary.json"
            )
            unreadable.append({"run": run_dir.name, "why": why})
            continue
        summaries.append(summary)
        spec = results.read_json(run_dir / results.SPEC) or {}
        m, q = summary.get("metrics", {}), summary.get("quality", {})
        row = {
            "run": summary.get("run", run_dir.name),
            "framework": summary.get("framework"),
            "framework_version": summary.get("framework_version"),
            "status": summary.get("status"),
            "reason": summary.get("reason", ""),
            **{col: _get(spec, path) for col, path in CONFIG_COLUMNS.items()},
            "precision": (summary.get("effective") or {}).get("precision"),
            **{col: m.get(col) for col in METRIC_COLUMNS},
            **{col: q.get(col) for col in QUALITY_COLUMNS},
            "base_heldout_loss": (summary.get("base_quality") or {}).get("heldout_loss"),
            "fingerprint": (summary.get("fingerprint") or {}).get("first_batches_sha256", "")[:12],
            **{f"v_{p}": (summary.get("versions") or {}).get(p) for p in VERSION_COLUMNS},
            "git_commit": summary.get("git_commit"),
        }
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        same = [p.get("same_tokens") for p in parity(summaries)]
        frame["same_tokens_as_reference"] = same
    return frame, unreadable


def repeats(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, 95 % confidence interval (Student's t) and coefficient of variation over runs that differ only
    by seed, per framework, for throughput and peak memory."""
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    out = []
    for (framework, _), group in ok.groupby([ok["framework"], job_of(ok, exclude=("seed",))], dropna=False):
        first = group.iloc[0]
        row = {"framework": framework, **{c: first[c] for c in CONFIG_COLUMNS if c in group and c != "seed"}}
        row["n"] = len(group)
        for col in REPEATED:
            values = group[col].dropna().astype(float)
            if values.empty:
                continue
            mean, sd = values.mean(), values.std(ddof=1) if len(values) > 1 else math.nan
            half = stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values)) if len(values) > 1 else math.nan
            row |= {f"{col}_mean": mean, f"{col}_ci95": half, f"{col}_cv": sd / mean if mean else math.nan}
        out.append(row)
    return pd.DataFrame(out)


def job_of(frame: pd.DataFrame, exclude: tuple[str, ...] = ()) -> pd.Series:
    """A key per row for "the same job": its config columns (less `exclude`) as text, missing ones as "-"
    (runs from older harness versions lack some)."""
    cols = [c for c in CONFIG_COLUMNS if c in frame and c not in exclude]
    return frame[cols].astype("string").fillna("-").agg("|".join, axis=1)


def with_ratios(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each ok run's throughput and memory relative to the baseline framework's runs of the same job."""
    ok = frame[frame["status"] == "ok"].copy()
    if ok.empty or baseline not in set(ok["framework"]):
        return ok
    cols = ["tokens_per_s", "peak_vram_mb", "peak_rss_mb"]
    ok["_job"] = job_of(ok)
    base = ok[ok["framework"] == baseline].groupby("_job")[cols].mean()
    merged = ok.merge(base, left_on="_job", right_index=True, how="left", suffixes=("", "_base"))
    for col in cols:
        merged[f"{col}_vs_{baseline}"] = merged[col] / merged[f"{col}_base"]
    return merged.drop(columns=["_job", *[f"{c}_base" for c in cols]])


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plots(sweep_dir: Path, frame: pd.DataFrame) -> dict[str, bytes]:
    """PNG plots: loss curves, memory timeline, throughput and quality bars (where there is data)."""
    out: dict[str, bytes] = {}
    ok = frame[frame["status"] == "ok"] if not frame.empty else frame
    if ok.empty:
        return out
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in ok["run"]:
        events = results.read_jsonl(sweep_dir / run / results.EVENTS)
        ax.plot([e["step"] for e in events], [e.get("loss") for e in events], label=run)
    ax.set(xlabel="step", ylabel="training loss", title="Loss curves")
    ax.legend(fontsize=7)
    out["loss_curves.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in ok["run"]:
        samples = results.read_jsonl(sweep_dir / run / results.SAMPLES)
        gpu = [sum(g["used_mb"] for g in s["gpus"]) for s in samples if s.get("gpus")]
        ys, label = (
            (gpu, "GPU used MB") if len(gpu) == len(samples) and gpu else ([s["rss_mb"] for s in samples], "RSS MB")
        )
        ax.plot([s["t"] for s in samples], ys, label=f"{run} ({label})")
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
    return out


SUMMARY_COLUMNS = (
    "run", "framework", "framework_version", "status", "tokens_per_s", "peak_vram_mb", "peak_rss_mb",
    "energy_j_per_1k_tokens", "mfu", "first_loss", "final_loss", "base_heldout_loss", "heldout_loss", "rouge_l",
    "bleu4", "fingerprint", "same_tokens_as_reference",
)  # fmt: skip


def summary_table(frame: pd.DataFrame, ratios: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader compares first, with the ratios against the baseline framework."""
    table = ratios if not ratios.empty else frame
    cols = [c for c in SUMMARY_COLUMNS if c in table] + [c for c in table if "_vs_" in c]
    return table[cols].dropna(axis=1, how="all")


def base_line(sweep_dir: Path) -> str | None:
    """The base model's held-out quality (evaluated once per sweep, in its first run): the reference point."""
    for run_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        base = (results.read_json(run_dir / results.SUMMARY) or {}).get("base_quality")
        if base:
            scores = (
                f"held-out loss {base['heldout_loss']:.4g}, ROUGE-L {base['rouge_l']:.4g}, BLEU-4 {base['bleu4']:.4g}"
            )
            return f"Base model before fine-tuning (evaluated in {run_dir.name}): {scores}"
    return None


def frontier_section(sweep_dir: Path) -> tuple[pd.DataFrame, str] | None:
    """A memory-frontier sweep's table (bench.frontier) and how its budgets were applied, when this is one."""
    from bench import frontier

    found = frontier.load(sweep_dir)
    return (frontier.frame(found), " ".join(frontier.method(found))) if found else None


def markdown(frame: pd.DataFrame, ratios: pd.DataFrame, reps: pd.DataFrame, unreadable, images, title, base,
             front=None) -> str:  # fmt: skip
    parts = [f"# {title}", ""] + ([base, ""] if base else [])
    if front is not None:
        parts += ["## Memory frontier (largest value that trains)", "", front[1], "", front[0].to_markdown(index=False),
                  ""]  # fmt: skip
    if frame.empty:
        parts += ["No finished runs in this sweep.", ""]
    else:
        parts += ["## Runs", "", summary_table(frame, ratios).to_markdown(index=False, floatfmt=".4g"), ""]
        if not reps.empty and (reps["n"] > 1).any():
            parts += [
                "## Repeats (mean, 95 % CI half-width, CV)",
                "",
                reps.to_markdown(index=False, floatfmt=".4g"),
                "",
            ]
        bad = frame[frame["status"] != "ok"]
        if not bad.empty:
            parts += [
                "## Runs that did not finish ok",
                "",
                bad[["run", "framework", "status", "reason"]].to_markdown(index=False),
                "",
            ]
    if unreadable:
        parts += ["## Skipped while building this report", "", pd.DataFrame(unreadable).to_markdown(index=False), ""]
    parts += [f"![{name}]({name})" for name in images]
    return "\n".join(parts) + "\n"


def to_html(frame: pd.DataFrame, ratios, reps, unreadable, images, title, base, front=None) -> str:
    """A self-contained page: tables as HTML, plots as inline PNG data URIs, no network needed."""

    def table(df: pd.DataFrame) -> str:
        return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-", border=0)

    body = [f"<h1>{html.escape(title)}</h1>"] + ([f"<p>{html.escape(base)}</p>"] if base else [])
    if front is not None:
        body += ["<h2>Memory frontier (largest value that trains)</h2>", f"<p>{html.escape(front[1])}</p>",
                 table(front[0])]  # fmt: skip
    if frame.empty:
        body.append("<p>No finished runs in this sweep.</p>")
    else:
        body += [
            "<h2>Runs</h2>",
            table(summary_table(frame, ratios)),
            "<details><summary>All columns (runs.csv)</summary>",
            table(frame),
            "</details>",
        ]
        if not reps.empty and (reps["n"] > 1).any():
            body += ["<h2>Repeats (mean, 95 % CI half-width, CV)</h2>", table(reps)]
        bad = frame[frame["status"] != "ok"]
        if not bad.empty:
            body += ["<h2>Runs that did not finish ok</h2>", table(bad[["run", "framework", "status", "reason"]])]
    if unreadable:
        body += ["<h2>Skipped while building this report</h2>", table(pd.DataFrame(unreadable))]
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


def build(sweep_dir: Path, baseline: str = "trl") -> dict[str, Path]:
    """Write runs.csv, runs.parquet, report.md (+ PNGs) and report.html into `sweep_dir`."""
    frame, unreadable = load_runs(sweep_dir)
    ratios = with_ratios(frame, baseline) if not frame.empty else frame
    reps = repeats(frame) if not frame.empty else pd.DataFrame()
    images = plots(sweep_dir, frame)
    title = f"sftbench report: {sweep_dir.name}"
    base = base_line(sweep_dir)
    front = frontier_section(sweep_dir)
    frame.to_csv(sweep_dir / "runs.csv", index=False)
    frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object}).to_parquet(
        sweep_dir / "runs.parquet", index=False
    )
    for name, png in images.items():
        (sweep_dir / name).write_bytes(png)
    results.write_text_atomic(
        sweep_dir / "report.md", markdown(frame, ratios, reps, unreadable, images, title, base, front)
    )
    results.write_text_atomic(
        sweep_dir / "report.html", to_html(frame, ratios, reps, unreadable, images, title, base, front)
    )
    return {n: sweep_dir / n for n in ("runs.csv", "runs.parquet", "report.md", "report.html")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description="Build a sweep's report from its runs.")
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--baseline", default="trl", help="framework the ratios are taken against (default: trl)")
    a = ap.parse_args(argv)
    if not a.sweep_dir.is_dir():
        print(f"error: {a.sweep_dir}: not a sweep directory", file=sys.stderr)
        return 2
    for name, path in build(a.sweep_dir, a.baseline).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
