"""One job's metrics across releases or commits of a framework: where a regression came in.

    python -m bench.history SWEEP [SWEEP ...] [--metric tokens_per_s] [--out DIR]

The sweeps' ok runs of one job, one point per system (a release, or a commit through framework.source): its
mean over the runs (seeds) with a 95 % CI (Student's t). Releases are in version order; commits, and a mix,
in the order the sweeps are given, then their runs' order (oldest first). Each step between neighbours that
the gate (bench.compare) would call a regression — worse by more than the metric's tolerance — is marked.
Writes history.md (the table) and history.svg (the figure) into --out (default: the first sweep), and prints
the table. Exit status: 0 no regression step, 1 at least one, 2 input that makes no history (runs of several
jobs, an unknown metric, no ok run).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.analysis.gate import tolerances, verdict
from bench.core import metrics as registry
from bench.core.errors import UserError

REGRESSED = "regressed"


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


def ordered(systems: list[str], versions: dict[str, str | None]) -> list[str]:
    """Releases in version order; anything else (a commit, a version that does not parse) as given."""
    from packaging.version import InvalidVersion, Version

    try:
        if all(versions[s] and "@" not in s for s in systems):
            return sorted(systems, key=lambda s: Version(str(versions[s])))
    except InvalidVersion:
        pass
    return systems


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
    systems = list(dict.fromkeys(ok["system"]))
    versions = dict(zip(ok["system"], ok["framework_version"], strict=True))
    systems = ordered(systems, versions)
    rules = tolerances()
    out = []
    for metric in metrics:
        points = [Point(s, tuple(float(v) for v in ok.loc[ok["system"] == s, metric] if not math.isnan(float(v))))
                  for s in systems]  # fmt: skip
        points = [p for p in points if p.values]
        higher = bool(registry.get(metric).higher_is_better)
        steps = [verdict(a.mean, b.mean, higher, rules[metric]) for a, b in zip(points, points[1:], strict=False)]
        out.append(Series(metric, points, steps))
    return out


def table(series: Series) -> list[str]:
    """Markdown: one row per system, the step from the previous one and the gate's verdict on it."""
    unit = registry.get(series.metric).unit
    lines = [f"| system | {series.metric} ({unit}) | 95 % CI | runs | change from the previous | verdict |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for i, p in enumerate(series.points):
        half = p.half()
        ci = f"[{p.mean - half:.4g}, {p.mean + half:.4g}]" if half is not None else "one run, no CI"
        change = verdict_cell = ""
        if i:
            prev = series.points[i - 1]
            change = f"{100 * (p.mean / prev.mean - 1):+.1f} %" if prev.mean else ""
            verdict_cell = "**regressed**" if series.steps[i - 1] == REGRESSED else series.steps[i - 1]
        lines.append(f"| {p.system} | {p.mean:.4g} | {ci} | {len(p.values)} | {change} | {verdict_cell} |")
    return lines


def figure(all_series: list[Series], path: Path) -> None:
    """Each metric against the systems in order, its CI as error bars, a regression step drawn red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(all_series), 1, figsize=(9, 2.6 * len(all_series)), squeeze=False)
    for ax, s in zip(axes[:, 0], all_series, strict=True):
        xs = range(len(s.points))
        ax.errorbar(xs, [p.mean for p in s.points], yerr=[p.half() or 0 for p in s.points], marker="o", capsize=4)
        for i, step in enumerate(s.steps):
            if step == REGRESSED:
                ax.plot([i, i + 1], [s.points[i].mean, s.points[i + 1].mean], color="red", linewidth=3)
        ax.set_xticks(list(xs), [p.system for p in s.points], rotation=20, fontsize=8)
        ax.set_ylabel(f"{s.metric} ({registry.get(s.metric).unit})", fontsize=8)
    fig.suptitle("History (red: a step the gate calls a regression)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
    figure(found, out / "history.svg")
    print("\n".join(lines))
    steps = [f"{s.metric}: {a_} -> {b}" for s in found for a_, b in s.regressions()]
    print("regression steps: " + ("; ".join(steps) if steps else "none"))
    return 1 if steps else 0
