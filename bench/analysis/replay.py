"""Published runs replayed next to one job: how much of a published difference between two frameworks was the
framework and how much the job each publication ran, and whether published claims hold on this host's runs.

Pure functions over the runs frame (bench.analysis.runs.load_runs: `system`, `published_source`, `as_published`,
`left_out`, `claims`, `trained_steps` and the `job.*` columns); bench.report renders the sections they return.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import math
import statistics
from typing import Any

import pandas as pd

from bench.analysis.runs import OTHER_TOKENS, differing_fields
from bench.core import metrics as registry

# A section of the report: heading, a paragraph, and a table or a list of lines (the findings).
Section = tuple[str, str | None, pd.DataFrame | list[str] | None]
EPOCH_TIME = "time_per_epoch_s"  # train_s over the epochs trained: publications train different lengths
DIFFERENCE_METRICS = (EPOCH_TIME, "tokens_per_s", "peak_vram_mb", "heldout_loss")
NO_CI = "one run each, no CI"
# A job field in words (fnmatch patterns, first match wins); any other field goes by its name.
FIELD_WORDS = {
    "job.model.*": "model",
    "job.train.max_seq_len": "sequence length",
    "job.train.optimizer": "optimizer",
    "job.train.lora.*": "LoRA",
    "job.dataset.prompt_format": "prompt format",
    "job.dataset.eos": "prompt format",
    "job.dataset.system_prompt": "prompt format",
    "job.train.chat_template": "prompt format",
    "job.train.loss_on": "loss tokens",
    "job.train.batch_size": "batch",
    "job.train.grad_accum": "batch",
    "job.train.num_gpus": "batch",
    "job.train.lr": "schedule",
    "job.train.scheduler": "schedule",
    "job.train.warmup_steps": "schedule",
    "job.train.epochs": "length of training",
    "job.train.max_steps": "length of training",
    "job.train.quant*": "quantisation",
    "job.train.precision": "precision",
    "job.train.gradient_checkpointing": "gradient checkpointing",
    "job.dataset.*": "dataset",
}


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and 95 % confidence half-width (Student's t); the half-width is NaN below two values."""
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    from scipy import stats  # here: the runs table (and the gate reading it) needs no statistics library

    return mean, stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def ratio_interval(ratios: list[float]) -> tuple[float, float, float]:
    """Geometric mean of positive ratios and its 95 % CI (Student's t on their logs): symmetric for a ratio and
    its inverse, and positive however noisy the ratios; the bounds are NaN below two ratios."""
    mean, half = t_interval([math.log(r) for r in ratios])
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def times(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.3g}x"


def ci_text(low: float, high: float, n: int) -> str:
    return NO_CI if n == 1 else f"{low:.3g}-{high:.3g}"


def is_published(frame: pd.DataFrame) -> pd.Series:
    """Runs that replay a published run (a seed-* scenario), whatever their status."""
    return frame["published_source"].notna() if "published_source" in frame else pd.Series(False, frame.index)


def published_marks(frame: pd.DataFrame) -> pd.Series | None:
    """For the runs table: "as published" / "not as published" on replayed published runs, empty on the others;
    None where no run replays one (the table then has no such column)."""
    replayed = is_published(frame)
    if not replayed.any():
        return None
    marks = frame["as_published"].map({True: "as published", False: "not as published"}).fillna("")
    return marks.where(replayed, "")


def not_as_published(frame: pd.DataFrame) -> Section | None:
    """The replayed published runs that differ from their publication, each difference once (bench.sweep.
    published: the published value, the value here and why); a skipped one once, as skipped."""
    left = frame[is_published(frame) & frame["as_published"].eq(False)]
    if left.empty:
        return None
    text = ("These runs replay a published run; every way each differs from it: the published value, the value "
            "here and why (this host, the command line, a stand-in, another release, what the harness cannot "
            "express).")  # fmt: skip
    skipped = left["status"].eq("skipped")
    differs = left["left_out"].where(~skipped, "skipped: " + left["reason"].fillna("").astype(str))
    table = pd.DataFrame({"system": left["system"], "run directory": left["run"], "differences": differs})
    return ("Not as published", text, table.reset_index(drop=True))


def published_figures(frame: pd.DataFrame) -> Section | None:
    """The publications' own time and memory beside the measured, only where the hardware and the data match;
    elsewhere which of them differ, so no one reads a laptop GPU's hours against a CPU's seconds."""
    cols = ["published_train_s", "published_peak_memory_gb"]
    if not set(cols) <= set(frame):
        return None
    runs = frame[is_published(frame) & frame[cols].notna().any(axis=1)]
    if runs.empty:
        return None
    same = runs[runs["published_unlike"].fillna("").eq("") & runs["status"].eq("ok")]
    sentences = ["The publications' own figures, set beside the measured ones only where the hardware and the data "
                 "match."]  # fmt: skip
    for _, r in runs.drop(same.index).iterrows():
        shown = (_figure("training", r["published_train_s"], "s"),
                 _figure("peak GPU memory", r["published_peak_memory_gb"], "GB"))  # fmt: skip
        figures = ", ".join(f for f in shown if f)
        why = r["published_unlike"] or f"the run ended {r['status']}"
        sentences.append(f"{r['system']}: published {figures}; not set beside this run's: {why}.")
    table = None
    if not same.empty:
        vram = same.get("peak_vram_mb", pd.Series(index=same.index, dtype=float)) / 1024
        table = pd.DataFrame({"system": same["system"], "published train s": same["published_train_s"],
                              "measured train s": same.get("train_s"),
                              "published peak GB": same["published_peak_memory_gb"],
                              "measured peak VRAM GB": vram}).reset_index(drop=True)  # fmt: skip
    return ("Published figures", " ".join(sentences), table)


def _figure(name: str, value: Any, unit: str) -> str | None:
    return None if pd.isna(value) else f"{name} {value:,.4g} {unit}"


def with_epoch_time(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with `time_per_epoch_s`: train_s over the epochs trained (steps x rows per step / rows), so
    that runs of different lengths over the same rows compare."""
    cols = ["train_s", "train_examples", "trained_steps", "job.train.batch_size", "job.train.grad_accum",
            "job.train.num_gpus"]  # fmt: skip
    v = frame.reindex(columns=cols).apply(pd.to_numeric, errors="coerce")
    rows_trained = v["trained_steps"] * v["job.train.batch_size"] * v["job.train.grad_accum"] * v["job.train.num_gpus"]
    return frame.assign(**{EPOCH_TIME: v["train_s"] * v["train_examples"] / rows_trained})


def seed_ratios(runs: pd.DataFrame, baseline: str, candidate: str, metric: str) -> tuple[list[float], str | None]:
    """`metric` of each ok candidate run over the ok baseline run of its job key and seed (the first, as
    report.with_ratios pairs them), only where both trained on the same tokens; or why there is no ratio."""
    ok = runs[(runs["status"] == "ok") & runs["job_key"].notna()]
    key = ["job_key", "seed"]
    base = ok[ok["framework"] == baseline].drop_duplicates(key)
    pairs = ok[ok["framework"] == candidate].merge(base, on=key, suffixes=("", "_base"))
    if pairs.empty:
        return [], f"no {candidate} and {baseline} runs of one job and seed"
    pairs = pairs[pairs["fingerprint"] == pairs["fingerprint_base"]]
    if pairs.empty:
        return [], OTHER_TOKENS
    values = pairs.reindex(columns=[metric, f"{metric}_base"]).astype(float).dropna()
    values = values[(values[metric] > 0) & (values[f"{metric}_base"] > 0)]  # a ratio's log needs both
    if values.empty:
        on_cpu = "device" in pairs and (pairs["device"] == "cpu").all()
        return [], f"no {metric} measured" + (" (trained on a CPU)" if on_cpu else "")
    return list(values[metric] / values[f"{metric}_base"]), None


def did_not_run(runs: pd.DataFrame, what: str) -> str | None:
    """Why `runs` (one system's) hold no ok run, from the first one's status and reason; None if one is ok."""
    if (runs["status"] == "ok").any():
        return None
    if runs.empty:
        return f"no {what} in these sweeps"
    first = runs.iloc[0]
    return f"the {what} ended {first['status']}" + (f": {first['reason']}" if first.get("reason") else "")


# What the difference was made of


def framework_order(frame: pd.DataFrame, baseline: str) -> list[str]:
    """Frameworks with a published run, the baseline first, the others as they come."""
    names = list(dict.fromkeys(frame.loc[is_published(frame), "framework"]))
    return sorted(names, key=lambda name: name != baseline)


def one_job_runs(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[~is_published(frame) & (frame["status"] == "ok")]


def has_both(frame: pd.DataFrame) -> bool:
    """Ok published runs, and ok one-job runs of at least two frameworks that have published runs."""
    published = frame[is_published(frame)]
    shared = set(one_job_runs(frame)["framework"]) & set(published["framework"])
    return (published["status"] == "ok").any() and len(shared) >= 2


def shared_job(one_job: pd.DataFrame, a: str, b: str) -> str | None:
    """The first job key both frameworks ran as one job."""
    theirs = set(one_job.loc[one_job["framework"] == b, "job_key"].dropna())
    return next((k for k in one_job.loc[one_job["framework"] == a, "job_key"] if k in theirs), None)


def in_words(fields: list[str]) -> list[str]:
    """Job fields as a reader names them (FIELD_WORDS), each once."""
    words = (next((w for p, w in FIELD_WORDS.items() if fnmatch.fnmatchcase(f, p)), f.removeprefix("job."))
             for f in fields)  # fmt: skip
    return list(dict.fromkeys(words))


def pair_rows(published: tuple[pd.Series, pd.Series], one_job: pd.DataFrame) -> list[dict[str, Any]]:
    """Per metric: the published runs' ratio (candidate / baseline) and the same job's, over its seed pairs."""
    base, cand = published
    pair = f"{cand['framework']} vs {base['framework']}"
    job = shared_job(one_job, base["framework"], cand["framework"])
    rows = []
    for metric in DIFFERENCE_METRICS:
        values, why = [], "no one-job runs of both"
        if job is not None:
            values, why = seed_ratios(one_job[one_job["job_key"] == job], base["framework"], cand["framework"], metric)
        mean, low, high = ratio_interval(values)
        b, c = pd.to_numeric(pd.Series([base.get(metric), cand.get(metric)]), errors="coerce")
        rows.append({"pair": pair, "metric": metric, "published": c / b if b else math.nan, "same_job": mean,
                     "ci95_low": low, "ci95_high": high, "seed_pairs": len(values),
                     "same_job_note": why or (NO_CI if len(values) == 1 else ""), "same_job_key": job})  # fmt: skip
    return rows


def pair_sentence(rows: list[dict[str, Any]], fields: list[str]) -> str:
    """The published runs' time-per-epoch ratio, the same job's, and the job fields that make the rest."""
    row = next(r for r in rows if r["metric"] == EPOCH_TIME)
    if row["seed_pairs"]:
        ci = ci_text(row["ci95_low"], row["ci95_high"], row["seed_pairs"])
        same = f"{times(row['same_job'])} ({ci if ci == NO_CI else f'95 % CI {ci}'})"
    else:
        same = f"no ratio ({row['same_job_note']})"
    rest = ", ".join(in_words(fields)) or "no job field differed"
    listed = f" Job fields that differed: {', '.join(fields)}." if fields else ""
    share = ""
    if row["seed_pairs"] and row["same_job"] > 0 and row["published"] > 0 and abs(math.log(row["published"])) > 1e-9:
        share = (f" The framework accounts for {100 * math.log(row['same_job']) / math.log(row['published']):.0f} % "
                 "of the published difference (on a log scale), the job for the rest.")  # fmt: skip
    return (f"Of the published runs' {times(row['published'])} time per epoch difference ({row['pair']}), the "
            f"same job shows {same}: the rest is the job — {rest}.{listed}{share}")  # fmt: skip


def shown_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The decomposition as the report's tables read: ratios as `0.58x [0.51, 0.65]`, why where there is none."""
    def same(r: dict[str, Any]) -> str:
        if not r["seed_pairs"]:
            return f"no ratio ({r['same_job_note']})"
        if r["seed_pairs"] == 1:
            return f"{times(r['same_job'])} (1 run)"
        return f"{times(r['same_job'])} [{r['ci95_low']:.3g}, {r['ci95_high']:.3g}]"

    return pd.DataFrame([{"pair": r["pair"], "metric": r["metric"], "published runs": times(r["published"]),
                          "same job": same(r), "seed pairs": r["seed_pairs"]} for r in rows])  # fmt: skip


def difference_section(frame: pd.DataFrame, baseline: str) -> Section | None:
    """What the difference was made of: each pair of frameworks' published runs (each its own job) against
    their runs of one job; present only when the frame holds both kinds."""
    if frame.empty or not has_both(frame):
        return None
    frame = with_epoch_time(frame)
    published, one_job = frame[is_published(frame)], one_job_runs(frame)
    sentences = ["Each framework's published run trained its own job; the same frameworks' runs of one job "
                 "show how much of the published difference was the framework. Ratios are candidate / baseline; "
                 "time per epoch is train_s over the epochs trained."]  # fmt: skip
    rows: list[dict[str, Any]] = []
    for a, b in itertools.combinations(framework_order(frame, baseline), 2):
        runs = [published[published["framework"] == f] for f in (a, b)]
        why = [w for f, r in zip((a, b), runs, strict=True) if (w := did_not_run(r, f"published {f} run"))]
        if why:
            sentences.append(f"{b} vs {a}: no ratio, {'; '.join(why)}.")
            continue
        pair = tuple(r[r["status"] == "ok"].iloc[0] for r in runs)
        found = pair_rows(pair, one_job)
        rows += found
        sentences.append(pair_sentence(found, differing_fields(*pair)))
    return ("What the difference was made of", " ".join(sentences), shown_rows(rows) if rows else None)


# Claims next to measurements

CLAIM = ("metric", "baseline", "candidate", "ratio", "source")


def claims_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The distinct claims the runs carry (the `claims` column: each run's list as JSON)."""
    found: dict[tuple, dict[str, Any]] = {}
    for text in frame["claims"].dropna() if "claims" in frame else []:
        for claim in json.loads(text):
            found.setdefault(tuple(claim[k] for k in CLAIM), claim)
    return list(found.values())


def verdict(claimed: float, mean: float, low: float, high: float, higher_is_better: bool | None) -> str:
    """Holds when the claimed ratio lies inside the interval (`low`–`high`, NaN from one pair), or the
    measurement is at least as good as claimed in the metric's better direction."""
    inside = low <= claimed <= high  # False for NaN bounds
    as_good = higher_is_better is not None and (mean >= claimed if higher_is_better else mean <= claimed)
    return "holds" if inside or as_good else "does not hold"


def claim_row(frame: pd.DataFrame, claim: dict[str, Any]) -> dict[str, Any]:
    metric, base, cand = claim["metric"], claim["baseline"], claim["candidate"]
    row = {"claim": f"{metric}: {cand} vs {base}, {claim['ratio']:g}x", "source": claim["source"],
           "measured": math.nan, "95 % CI": "", "verdict": ""}  # fmt: skip
    why = did_not_run(frame[frame["framework"] == cand], f"{cand} run") or did_not_run(
        frame[frame["framework"] == base], f"{base} run"
    )
    values: list[float] = []
    if why is None:
        values, why = seed_ratios(frame, base, cand, metric)
    if why:
        return row | {"verdict": f"not measurable here: {why}"}
    mean, low, high = ratio_interval(values)
    says = verdict(claim["ratio"], mean, low, high, registry.get(metric).higher_is_better)
    return row | {"measured": mean, "95 % CI": ci_text(low, high, len(values)), "verdict": says}


def claims_section(frame: pd.DataFrame) -> Section | None:
    """Each published claim the runs carry, next to the ratio measured here."""
    claims = claims_of(frame) if not frame.empty else []
    if not claims:
        return None
    text = ("Claims the scenarios carry, held against this host's runs of both systems on one job and seed that "
            "trained on the same tokens: measured is candidate / baseline, the geometric mean over seed pairs with "
            "a 95 % CI (Student's t on the log ratios). A claim holds when the claimed ratio lies inside the "
            "interval or the measurement is at least as good in the metric's better direction.")  # fmt: skip
    return ("Claims next to measurements", text, pd.DataFrame([claim_row(frame, c) for c in claims]))
