"""One job's metrics across releases or commits of a framework: where a regression came in.

    python -m bench.history SWEEP [SWEEP ...] [--metric tokens_per_s] [--out DIR]

The sweeps' ok runs of one job, one point per system (a release, or a commit through framework.source): its
mean over the runs (seeds) with a 95 % CI (Student's t). Releases are in version order; commits of one local
repository (runs.csv's source_repo) in that repository's history order, oldest first; anything else, and a
mix, in the order the sweeps are given, then their runs' order. Each step between neighbours that
the gate (bench.compare) would call a regression — worse by more than the metric's tolerance — is marked.
Writes history.md (the table) and history.svg (the figure) into --out (default: the first sweep), and prints
the table. Exit status: 0 no regression step, 1 at least one, 2 input that makes no history (runs of several
jobs, an unknown metric, no ok run).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.analysis.gate import REGRESSED, tolerances, verdict
from bench.core import metrics as registry
from bench.core.errors import UserError


@dataclass(frozen=True)
class Point:
    system: str
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    def half(self) -> float | None:
        """The 95 % CI's half width over the runs; None from one run."""
        from bench.analysis.replay import t_interval

        return t_interval(list(self.values))[1] if len(self.values) > 1 else None


@dataclass(frozen=True)
class Series:
    metric: str
    points: list[Point]
    steps: list[str]  # between points i and i + 1: the gate's verdict (ok, improved, regressed)

    def regressions(self) -> list[tuple[str, str]]:
        pairs = zip(self.points, self.points[1:], strict=False)
        return [(a.system, b.system) for (a, b), v in zip(pairs, self.steps, strict=True) if v == REGRESSED]


def ordered(ok: pd.DataFrame) -> list[str]:
    """The systems of these runs as a history: releases in version order, commits of one local repository in
    its history's order, anything else (a version that does not parse, a remote source, a mix) as given."""
    from packaging.version import InvalidVersion, Version

    systems = list(dict.fromkeys(ok["system"]))
    first = ok.drop_duplicates("system").set_index("system")
    commits = first.get("source_commit", pd.Series(dtype=object)).dropna().to_dict()
    repos = set(first.get("source_repo", pd.Series(dtype=object)).dropna())
    if len(commits) == len(systems) and len(repos) == 1:
        order = commit_order(Path(repos.pop()), list(commits.values()))
        if order:
            return sorted(systems, key=lambda s: order[commits[s]])
    versions = first["framework_version"].to_dict()
    try:
        if all(versions[s] and "@" not in s for s in systems):
            return sorted(systems, key=lambda s: Version(str(versions[s])))
    except InvalidVersion:
        pass
    return systems


def commit_order(repo: Path, commits: list[str]) -> dict[str, int]:
    """Each commit's place in the repository's history, oldest first; empty where git cannot say (no such
    repository or commit)."""
    proc = subprocess.run(["git", "-C", str(repo), "rev-list", "--topo-order", "--reverse", *set(commits)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        return {}
    place = {sha: i for i, sha in enumerate(proc.stdout.split())}
    return place if all(c in place for c in commits) else {}


def history(sweeps: list[Path], metrics: list[str]) -> list[Series]:
    """Each metric across the systems of one job (UserError: several jobs, an unknown metric, no ok run)."""
    from bench.analysis import runs

    unknown = [m for m in metrics if m not in registry.gated()]
    if unknown:
        raise UserError(f"--metric {', '.join(unknown)}: not a gated metric; gated: {', '.join(registry.gated())}")
    frame = runs.load(sweeps[0], sweeps[1:]).frame
    ok = frame[frame["status"] == "ok"] if not frame.empty else frame
    if ok.empty:
        raise UserError(f"{', '.join(map(str, sweeps))}: no run finished ok, so there is no history")
    jobs = list(dict.fromkeys(ok["job_key"]))
    if len(jobs) > 1:
        raise UserError(f"a history is of one job; these sweeps ran {len(jobs)}: {', '.join(map(str, jobs))} "
                        "(compare the same overrides across releases or commits)")  # fmt: skip
    return series_of(ok, metrics)


def series_of(ok: pd.DataFrame, metrics: list[str]) -> list[Series]:
    """Each metric across the systems of these ok runs of one job, in history order."""
    systems = ordered(ok)
    rules = tolerances()
    out = []
    for metric in metrics:
        values = pd.to_numeric(ok[metric], errors="coerce") if metric in ok else pd.Series(math.nan, index=ok.index)
        points = [Point(s, tuple(float(v) for v in values[ok["system"] == s].dropna())) for s in systems]
        points = [p for p in points if p.values]
        higher = bool(registry.get(metric).higher_is_better)
        steps = [verdict(a.mean, b.mean, higher, rules[metric]) for a, b in zip(points, points[1:], strict=False)]
        out.append(Series(metric, points, steps))
    return out


def in_sweep(frame: pd.DataFrame, least: int = 3) -> list[Series]:
    """A sweep's history, for its report: the first job on which one framework ran `least` or more systems
    (releases, commits) that finished ok, each gated metric measured on `least` of them; empty if none."""
    ok = frame[frame["status"] == "ok"] if not frame.empty else frame
    for _, runs in ok.groupby(["job_key", "framework"], sort=False):
        if runs["system"].nunique() >= least:
            return [s for s in series_of(runs, list(registry.gated())) if len(s.points) >= least]
    return []


def rows(series: Series) -> list[dict[str, str]]:
    """One row per system: its mean, CI and runs, the change from the previous one and the gate's verdict."""
    out = []
    for i, p in enumerate(series.points):
        half = p.half()
        row = {"system": p.system, "mean": f"{p.mean:.4g}",
               "95 % CI": f"[{p.mean - half:.4g}, {p.mean + half:.4g}]" if half is not None else "one run, no CI",
               "runs": str(len(p.values)), "change from the previous": "", "verdict": ""}  # fmt: skip
        if i:
            prev = series.points[i - 1]
            row["change from the previous"] = f"{100 * (p.mean / prev.mean - 1):+.1f} %" if prev.mean else ""
            row["verdict"] = REGRESSED if series.steps[i - 1] == REGRESSED else series.steps[i - 1]
        out.append(row)
    return out


def table(series: Series) -> list[str]:
    """Markdown: one row per system, the step from the previous one and the gate's verdict on it (a
    regression in bold)."""
    unit = registry.get(series.metric).unit
    head = ["system", f"{series.metric} ({unit})", "95 % CI", "runs", "change from the previous", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows(series):
        r["verdict"] = f"**{REGRESSED}**" if r["verdict"] == REGRESSED else r["verdict"]
        lines.append("| " + " | ".join(r.values()) + " |")
    return lines


def section(found: list[Series]) -> tuple[str, str, pd.DataFrame] | None:
    """The report's section for a sweep's history (in_sweep), or None."""
    if not found:
        return None
    frame = pd.DataFrame([{"metric": f"{s.metric} ({registry.get(s.metric).unit})", **r} for s in found
                          for r in rows(s)])  # fmt: skip
    text = ("One job across the releases or commits of one framework, in their order (releases by version, "
            "commits by their repository's history): each gated metric's mean over the seeds with its 95 % CI, "
            "and each step the gate (bench.compare, the metric's tolerance) would call a regression. "
            "`python -m bench.history` does the same over several sweeps.")  # fmt: skip
    return ("History", text, frame)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.splitlines()[0],
                                 epilog="example: python -m bench.history results/<release sweep> --metric "
                                        "tokens_per_s")  # fmt: skip
    ap.add_argument("sweeps", type=Path, nargs="+")
    ap.add_argument("--metric", action="append", help="a gated metric (default: every gated metric); repeatable")
    ap.add_argument("--out", type=Path, help="where history.md and history.svg go (default: the first sweep)")
    a = ap.parse_args(argv)
    try:
        missing = [str(s) for s in a.sweeps if not s.is_dir()]
        if missing:
            raise UserError(f"{', '.join(missing)}: not a sweep directory")
        found = history(a.sweeps, a.metric or list(registry.gated()))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    found = [s for s in found if s.points]
    lines = [line for s in found for line in (f"### {s.metric}", "", *table(s), "")]
    out = a.out or a.sweeps[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.md").write_text("\n".join(lines), encoding="utf-8")
    from bench.analysis import plots

    (out / "history.svg").write_bytes(plots.history(found))
    print("\n".join(lines))
    steps = [f"{s.metric}: {a_} -> {b}" for s in found for a_, b in s.regressions()]
    print("regression steps: " + ("; ".join(steps) if steps else "none"))
    return 1 if steps else 0
