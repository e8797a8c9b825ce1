"""What a sweep found, in words, before any table: per job, one line per system against the baseline system —
tokens/s, peak memory and held-out loss as ratios with their 95 % interval over seed pairs — or, in the same
place, why a ratio cannot be taken or trusted (other tokens, one run, a shared machine, different torch builds,
a run that did not finish). Parity flags (loss curves, step-1 loss or padding apart) are findings too.

Systems are named as a reader names them — `trl 1.16.0`, `trl+liger 1.16.0`, `trl 1.16.0 lr=2e-4` — never by
run directory. Pure functions over the runs frame (bench.analysis.runs.load_runs); the report renders the lines first
and bench.run prints them at the end of a sweep.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.analysis import frontier_table, replay
from bench.analysis.assess import CURVE_RTOL, PADDING_TOL, STEP1_RTOL
from bench.analysis.runs import NOTE_SEP, OTHER_TOKENS
from bench.core.data import RECALL
from bench.core.metrics import PHASE_NAMES, PHASES

RATIO_METRICS = ("tokens_per_s", "peak_vram_mb", "peak_rss_mb", "heldout_loss")
PHASE_WITHIN = 0.05  # two systems' phase times this close are "within 5 %": not where their speeds part
MEMORY = {"peak_vram_mb": "peak VRAM", "peak_rss_mb": "peak RSS"}  # VRAM where both systems had a GPU
ONE_RUN = "one run each (no CI)"
SHARED = "the machine was shared during training"
TORCH = "different torch builds"
NO_RUNS = "No runs in this sweep: nothing was measured."
NO_OK_RUN = "No run finished ok, so nothing was measured or compared:"


def short(job_key: Any) -> str:
    return str(job_key)[:8] if isinstance(job_key, str) and job_key else "?"


def seed_text(seed: Any) -> str:
    return str(int(seed)) if isinstance(seed, int | float) and not pd.isna(seed) else str(seed)


def run_labels(frame: pd.DataFrame) -> pd.Series:
    """Per run, what a plot's legend calls it: its system, with the job and seed where that system has runs
    of several, and a number where two runs would still share a label."""
    labels = []
    for _, run in frame.iterrows():
        same = frame[frame["system"] == run["system"]]
        label = run["system"]
        if same["job_key"].nunique(dropna=False) > 1:
            label += f" job {short(run['job_key'])}"
        if same["seed"].nunique(dropna=False) > 1:
            label += f" seed {seed_text(run['seed'])}"
        labels.append(label)
    counts, seen = Counter(labels), Counter()
    for i, label in enumerate(labels):
        if counts[label] > 1:
            seen[label] += 1
            labels[i] = f"{label} #{seen[label]}"
    return pd.Series(labels, index=frame.index, dtype=object)


# Comparisons


@dataclass
class Ratio:
    """A candidate system's metric over the baseline system's, one value per seed pair. The mean and interval
    are taken on the log scale (geometric mean; Student's t on the pairs' log ratios): a ratio and its inverse
    are symmetric there, and the interval of a positive ratio stays positive however noisy the pairs."""

    values: list[float]

    @property
    def mean(self) -> float:
        return replay.ratio_interval(self.values)[0]

    @property
    def low(self) -> float:
        return replay.ratio_interval(self.values)[1]

    @property
    def high(self) -> float:
        return replay.ratio_interval(self.values)[2]

    def point(self) -> str:
        return f"{sig3(self.mean)}x"

    def interval(self) -> str:
        return f"95 % CI {sig3(self.low)}–{sig3(self.high)}"

    def cell(self) -> str:
        """For a table: `1.30x [1.21, 1.39]`, `1.30x (1 run)`; empty without a value."""
        if not self.values:
            return ""
        if len(self.values) == 1:
            return f"{self.point()} (1 run)"
        return f"{self.point()} [{sig3(self.low)}, {sig3(self.high)}]"

    def text(self) -> str:
        """For a finding: `1.30x (95 % CI 1.21–1.39)`; one pair: the point alone (the line says no CI)."""
        return self.point() if len(self.values) == 1 else f"{self.point()} ({self.interval()})"


def sig3(value: float) -> str:
    """Three significant digits, trailing zeros kept (`1.30`, `0.681`, `19.1`, `100`)."""
    return f"{value:#.3g}".rstrip(".")


@dataclass
class Comparison:
    """One system against the baseline system on one job: the ratios over seed pairs that trained on the same
    tokens, or why there are none, and what limits how far they can be trusted."""

    job_key: str | None
    system: str
    baseline: str | None  # the baseline system's name on this job
    why: str | None = None  # no ratio at all, and why
    pairs: int = 0
    ratios: dict[str, Ratio] = field(default_factory=dict)
    means: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (candidate, baseline)
    caveats: list[str] = field(default_factory=list)
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)  # phase -> ms per step (candidate, base)
    tokens_verified: bool = True  # False: a run recorded no data fingerprint (an older harness)


def fingerprint(run: pd.Series) -> str | None:
    value = run.get("fingerprint")
    return value if isinstance(value, str) and value else None


def other_tokens(a: pd.Series, b: pd.Series) -> bool:
    """Both runs recorded their data fingerprint and the fingerprints differ."""
    return bool(fingerprint(a) and fingerprint(b) and fingerprint(a) != fingerprint(b))


def baseline_system(runs: pd.DataFrame, baseline: str) -> str | None:
    """The system the others on one job are held against: the first of the baseline framework to finish ok
    (so `trl 0.24.0` in a release sweep that starts with it), else its first at all."""
    of_baseline = runs[runs["framework"] == baseline]
    ok = of_baseline[of_baseline["status"] == "ok"]
    chosen = ok if not ok.empty else of_baseline
    return None if chosen.empty else chosen["system"].iloc[0]


def did_not_finish(runs: pd.DataFrame) -> str:
    """`skipped: reason` from a system's first run (none of which finished ok)."""
    first = runs.iloc[0]
    reason = first.get("reason")
    return f"{first['status']}" + (f": {reason}" if isinstance(reason, str) and reason else "")


def pairs_of(mine: pd.DataFrame, base: pd.DataFrame) -> list[tuple[pd.Series, pd.Series]]:
    """Each ok run of a system with the baseline system's first ok run of the same seed."""
    found = []
    for _, run in mine.iterrows():
        ref = base[base["seed"] == run["seed"]]
        if not ref.empty:
            found.append((run, ref.iloc[0]))
    return found


def compare(job_key: str | None, runs: pd.DataFrame, system: str, base_system: str | None, baseline: str,
            labels: pd.Series) -> Comparison:  # fmt: skip
    """One system against the baseline system on one job (`runs`: all of that job's runs)."""
    c = Comparison(job_key, system, base_system)
    mine = runs[runs["system"] == system]
    base = runs[runs["system"] == base_system]
    ok, base_ok = mine[mine["status"] == "ok"], base[base["status"] == "ok"]
    if ok.empty:
        c.why = did_not_finish(mine)
    elif base_system is None:
        c.why = f"no {baseline} run of this job"
    elif base_ok.empty:
        c.why = f"{base_system} did not finish ok ({did_not_finish(base)})"
    if c.why:
        return c
    pairs = pairs_of(ok, base_ok)
    if not pairs:
        c.why = f"no {base_system} run with the same seed"
        return c
    same = [(a, b) for a, b in pairs if not other_tokens(a, b)]
    if not same:
        a, b = pairs[0]
        c.why = f"{OTHER_TOKENS} (data fingerprint {a['fingerprint']} vs {b['fingerprint']})"
        return c
    if len(same) < len(pairs):
        c.caveats.append(f"{len(pairs) - len(same)} of {len(pairs)} seed pairs {OTHER_TOKENS} and are left out")
    c.pairs = len(same)
    c.tokens_verified = all(fingerprint(a) and fingerprint(b) for a, b in same)
    for metric in RATIO_METRICS:
        values = [(float(a[metric]), float(b[metric])) for a, b in same
                  if pd.notna(a.get(metric)) and pd.notna(b.get(metric))]  # fmt: skip
        values = [(x, y) for x, y in values if x > 0 and y > 0]  # a ratio's log needs both
        c.ratios[metric] = Ratio([x / y for x, y in values])
        if values:
            c.means[metric] = (sum(x for x, _ in values) / len(values), sum(y for _, y in values) / len(values))
    c.phases = phase_means(same)
    c.caveats += caveats([run for pair in same for run in pair], same, labels)
    return c


def phase_means(pairs: list[tuple[pd.Series, pd.Series]]) -> dict[str, tuple[float, float]]:
    """Each phase's mean time per step (ms) of the candidate and the baseline over the seed pairs that
    measured it (runs.csv's phase_*_ms)."""
    out = {}
    for phase in PHASES:
        column = f"phase_{phase}_ms"
        values = [(float(a[column]), float(b[column])) for a, b in pairs if pd.notna(a.get(column))
                  and pd.notna(b.get(column))]  # fmt: skip
        if values:
            out[phase] = (sum(x for x, _ in values) / len(values), sum(y for _, y in values) / len(values))
    return out


def phase_text(phases: dict[str, tuple[float, float]], within: float = PHASE_WITHIN) -> str | None:
    """Why the step times differ: the phase whose time differs most (and its share of the difference in step
    time), then the phases that are within `within` of each other, e.g. `per step, loss and metrics 41.0 ms vs
    3.00 ms (90 % of the difference), forward and backward within 5 %`."""
    if len(phases) < len(PHASES):
        return None
    diffs = {p: mine - base for p, (mine, base) in phases.items()}
    top = max(diffs, key=lambda p: abs(diffs[p]))
    total = sum(diffs.values())
    mine, base = phases[top]
    text = f"per step, {PHASE_NAMES[top]} {sig3(mine)} ms vs {sig3(base)} ms"
    if total and abs(total) >= abs(diffs[top]) * 0.01:
        text += f" ({100 * diffs[top] / total:.0f} % of the difference in step time)"
    close = [PHASE_NAMES[p] for p in ("forward", "backward", "optimizer", "data", "loss")
             if p != top and phases[p][1] > 0 and abs(phases[p][0] / phases[p][1] - 1) <= within]  # fmt: skip
    if close:
        names = close[0] if len(close) == 1 else ", ".join(close[:-1]) + " and " + close[-1]
        text += f", {names} within {within:.0%}".replace("%", " %")
    return text


def caveats(used: list[pd.Series], pairs: list[tuple[pd.Series, pd.Series]], labels: pd.Series) -> list[str]:
    """What limits the ratios of these runs: a machine shared while they trained, and the candidate and
    baseline runs on different torch builds or devices."""
    out = []
    shared = {labels[r.name]: r["shared_machine"] for r in sorted(used, key=lambda r: r.name)
              if isinstance(r.get("shared_machine"), str)}  # fmt: skip
    if shared:
        why = "; ".join(f"{label}: {text.split(': ', 1)[-1]}" for label, text in shared.items())
        out.append(f"{SHARED} — {why} — so tokens/s is not the frameworks' alone")
    for column, words, consequence in [("torch_build", TORCH, "part of the speed difference is torch's"),
                                       ("device", "different devices", "the ratios compare machines too")]:  # fmt: skip
        mine = list(dict.fromkeys(a.get(column) for a, _ in pairs if isinstance(a.get(column), str)))
        theirs = list(dict.fromkeys(b.get(column) for _, b in pairs if isinstance(b.get(column), str)))
        if mine and theirs and set(mine) != set(theirs):
            out.append(f"{words} ({', '.join(mine)} vs {', '.join(theirs)}), so {consequence}")
    return out


def comparisons(frame: pd.DataFrame, baseline: str) -> list[Comparison]:
    """Every system against the baseline system of its job, job by job in run order; jobs that only one
    system ran compare nothing."""
    if frame.empty:
        return []
    out = []
    for job_key, runs in jobs(frame):
        systems = list(dict.fromkeys(runs["system"]))
        if len(systems) < 2:
            continue
        base_system = baseline_system(runs, baseline)
        labels = run_labels(runs)  # within the job: a system's seeds, not its other jobs
        out += [compare(job_key, runs, s, base_system, baseline, labels) for s in systems if s != base_system]
    return out


def jobs(frame: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    """The frame's runs by job key, in run order (runs without one: each a job of its own)."""
    keys = frame["job_key"].where(frame["job_key"].notna(), "?" + frame["run"].astype(str))
    return [(None if k.startswith("?") else k, frame[keys == k]) for k in dict.fromkeys(keys)]


# Lines


def comparison_line(c: Comparison) -> str:
    """`llamafactory 0.9.5 vs trl 1.16.0, same job c1d2be19, same tokens, 3 seed pairs: tokens/s 1.30x (95 %
    CI 1.21–1.39), ...`, or the same head with why there is no ratio."""
    head = f"{c.system} vs {c.baseline}" if c.baseline else c.system
    head += f", same job {short(c.job_key)}" if c.job_key else ", no job key recorded"
    if c.why:
        return f"{head}: no ratio — {c.why}."
    runs = ONE_RUN if c.pairs == 1 else f"{c.pairs} seed pairs"
    parts = [metric_text("tokens/s", c.ratios["tokens_per_s"])]
    memory = next((m for m in MEMORY if c.ratios[m].values), None)
    parts.append(metric_text(MEMORY[memory], c.ratios[memory]) if memory else "peak memory not measured")
    if c.ratios["heldout_loss"].values:
        parts.append(heldout_text(c.ratios["heldout_loss"], c.means["heldout_loss"]))
    tokens = "same tokens" if c.tokens_verified else "tokens not verified (no data fingerprint recorded)"
    line = f"{head}, {tokens}, {runs}: {', '.join(parts)}."
    if why := phase_text(c.phases):
        line += f" Why: {why}."
    return line + (f" Caution: {'; '.join(c.caveats)}." if c.caveats else "")


def metric_text(name: str, ratio: Ratio) -> str:
    return f"{name} {ratio.text()}" if ratio.values else f"{name} not measured"


def heldout_text(ratio: Ratio, means: tuple[float, float]) -> str:
    """Held-out loss: with several seed pairs, equal when 1 lies inside the ratio's interval, else lower or
    higher; with one pair, the ratio and both losses."""
    if len(ratio.values) == 1:
        return f"held-out loss {ratio.text()} ({means[0]:.4g} vs {means[1]:.4g})"
    if ratio.low <= 1 <= ratio.high:
        return f"held-out loss equal ({ratio.point()}, {ratio.interval()}: the difference is inside its CI)"
    return f"held-out loss {'lower' if ratio.high < 1 else 'higher'} ({ratio.point()}, {ratio.interval()})"


def only_line(job_key: str | None, runs: pd.DataFrame) -> str:
    """A job that one system ran: its numbers, or why it has none."""
    system = runs["system"].iloc[0]
    ok = runs[runs["status"] == "ok"]
    where = f"job {short(job_key)}" if job_key else "no job key recorded"
    if ok.empty:
        return f"{system}, {where}: {did_not_finish(runs)}; nothing measured."
    numbers = [f"{name} {fmt(ok[m].astype(float).mean())}{unit}" for m, name, unit in
               [("tokens_per_s", "tokens/s", ""), ("peak_vram_mb", "peak VRAM", " MiB"),
                ("peak_rss_mb", "peak RSS", " MiB"), ("heldout_loss", "held-out loss", "")]
               if m in ok and ok[m].notna().any()]  # fmt: skip
    n = f"{len(ok)} run" + ("s" if len(ok) > 1 else "")
    return f"Only {system} ran {where} ({n} ok): nothing to compare it with; " + ", ".join(numbers) + "."


def fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def parity_lines(frame: pd.DataFrame) -> list[str]:
    """Runs that trained on the same tokens as their job's reference run but started or went on differently:
    step-1 loss, loss curve or padding share apart beyond their tolerances, the largest per system."""
    if "parity_reference" not in frame:
        return []
    by_run = frame.set_index("run", drop=False)
    flagged: dict[tuple[Any, str, str], dict[str, Any]] = {}
    for _, run in frame[(frame["status"] == "ok") & frame["parity_reference"].notna()].iterrows():
        ref = by_run.loc[run["parity_reference"]] if run["parity_reference"] in by_run.index else None
        if ref is None or ref["run"] == run["run"] or other_tokens(run, ref):
            continue  # other tokens: the comparison line says so, and the losses are bound to differ
        found = {flag: value for flag, value, tol in [("step1", run.get("step1_loss_rel_diff"), STEP1_RTOL),
                                                     ("curve", run.get("curve_loss_rel_diff"), CURVE_RTOL),
                                                     ("padding", run.get("padding_diff"), PADDING_TOL)]
                 if pd.notna(value) and value > tol}  # fmt: skip
        if found:
            verified = bool(fingerprint(run) and fingerprint(ref))
            key = (run["job_key"], run["system"], ref["system"], verified)
            worst = flagged.setdefault(key, {"steps": run.get("curve_steps")})
            for flag, value in found.items():
                worst[flag] = max(worst.get(flag, value), value)
    return [parity_line(*key, worst) for key, worst in flagged.items()]


def parity_line(job_key: Any, system: str, reference: str, verified: bool, worst: dict[str, Any]) -> str:
    flags = []
    if "step1" in worst:
        flags.append(f"step-1 loss {worst['step1']:.1e} apart (relative; tolerance {STEP1_RTOL:.0e})")
    if "curve" in worst:
        flags.append(f"loss curve {100 * worst['curve']:.2g} % apart over steps {worst['steps']} "
                     f"(tolerance {100 * CURVE_RTOL:g} %)")  # fmt: skip
    if "padding" in worst:
        flags.append(f"padding ratios {100 * worst['padding']:.1f} points apart (tolerance {100 * PADDING_TOL:g})")
    tokens = "same tokens" if verified else "tokens not verified"
    return (f"Parity: {system} vs {reference}, same job {short(job_key)}, {tokens}: {', '.join(flags)} — "
            "they did not train identically, so their ratios compare different training.")  # fmt: skip


def lines(frame: pd.DataFrame, found: list[Comparison]) -> list[str]:
    """The findings block: per job, a line per system against the baseline system (or the one system's
    numbers), then the parity findings; or why there is nothing to compare."""
    if frame.empty:
        return [NO_RUNS]
    if not (frame["status"] == "ok").any():
        return [NO_OK_RUN, *(only_line(k, r[r["system"] == s]) for k, r in jobs(frame)
                             for s in dict.fromkeys(r["system"]))]  # fmt: skip
    out = []
    by_job = {(c.job_key, c.system): c for c in found}
    for job_key, runs in jobs(frame):
        systems = list(dict.fromkeys(runs["system"]))
        if len(systems) == 1:
            out.append(only_line(job_key, runs))
        out += [comparison_line(by_job[(job_key, s)]) for s in systems if (job_key, s) in by_job]
    return out + note_lines(frame) + parity_lines(frame)


def note_lines(frame: pd.DataFrame) -> list[str]:
    """What qualifies the numbers above: per job and system, the notes of its runs that finished ok (where the
    framework did not follow the spec to the letter, what the evaluation measured), the held-out overlap
    first ("quality is recall"), each once."""
    out = []
    for job_key, runs in jobs(frame):
        ok = runs[runs["status"] == "ok"]
        for system in dict.fromkeys(ok["system"]):
            texts = ok.loc[ok["system"] == system, "notes"].dropna() if "notes" in ok else []
            notes = list(dict.fromkeys(n for text in texts for n in str(text).split(NOTE_SEP) if n))
            notes.sort(key=lambda n: not n.startswith(RECALL))
            if notes:
                out.append(f"Notes on {system}, job {short(job_key)}: {'; '.join(notes)}.")
    return out


def unreadable_line(unreadable: list[dict[str, str]]) -> list[str]:
    """Run directories without a readable summary: in no comparison, and said so."""
    if not unreadable:
        return []
    runs = "; ".join(f"{u['run']}: {u['why']}" for u in unreadable)
    return [f"Not compared, no readable summary ({len(unreadable)} run directories): {runs}."]


def frontier_lines(found: list[dict[str, Any]]) -> list[str]:
    """A memory-frontier sweep's findings: per framework and budget, the largest value that trained."""
    cpu = frontier_table.on_cpu(found)
    out = [f"{f['framework']} at {frontier_table.budget_label(f['budget_gb'], cpu)}: largest {f.get('axis', 'value')} "
           f"that trains {frontier_table.cell(f)}." for f in found]  # fmt: skip
    return out + (["No GPU: the memory budgets were not enforced."] if cpu else [])
