"""Regression gate between two sweeps: `python -m bench.compare BASELINE CANDIDATE`.

Runs are matched by framework and job configuration. Throughput, peak memory, final and held-out loss are
compared with the tolerances in conf/compare.yaml (or --tolerances). Prints a table, writes a Markdown
summary (--summary, or $GITHUB_STEP_SUMMARY when set), and exits 1 on a regression, 0 otherwise, 2 when the
input cannot be compared (missing directory, no finished runs, nothing in common).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from bench.report import job_of, load_runs

DEFAULT_TOLERANCES = Path(__file__).resolve().parent.parent / "conf" / "compare.yaml"


class Unusable(Exception):
    """Input that cannot be compared (exit code 2)."""


@dataclass
class Check:
    key: str
    metric: str
    baseline: float | None
    candidate: float | None
    rel_tol: float
    verdict: str  # ok | improved | regressed | missing

    @property
    def change(self) -> float | None:
        if self.baseline in (None, 0) or self.candidate is None:
            return None
        return self.candidate / self.baseline - 1


def verdict(baseline: float, candidate: float, better: str, rel_tol: float) -> str:
    change = (candidate - baseline) / abs(baseline) if baseline else 0.0
    worse = -change if better == "higher" else change
    if worse > rel_tol:
        return "regressed"
    return "improved" if worse < -rel_tol else "ok"


def _ok_runs(sweep: Path):
    if not sweep.is_dir():
        raise Unusable(f"{sweep}: not a sweep directory")
    frame, _ = load_runs(sweep)
    if frame.empty:
        raise Unusable(f"{sweep}: no finished runs")
    frame = frame.assign(_key=frame["framework"].astype(str) + "|" + job_of(frame))
    return frame


def compare(baseline: Path, candidate: Path, tolerances: dict) -> list[Check]:
    base, cand = _ok_runs(baseline), _ok_runs(candidate)
    common = sorted(set(base["_key"]) & set(cand["_key"]))
    if not common:
        raise Unusable("no run of the candidate matches a run of the baseline (framework and job configuration)")
    checks = []
    for key in common:
        b, c = base[base["_key"] == key].iloc[0], cand[cand["_key"] == key].iloc[0]
        label = f"{b['run']} → {c['run']}"
        if b["status"] != "ok":
            continue  # nothing to hold the candidate to
        if c["status"] != "ok":
            checks.append(Check(label, "status", None, None, 0.0, "regressed"))
            continue
        for metric, rule in tolerances.items():
            bv, cv = _num(b.get(metric)), _num(c.get(metric))
            if bv is None:
                continue
            v = "missing" if cv is None else verdict(bv, cv, rule["better"], float(rule["rel_tol"]))
            checks.append(Check(label, metric, bv, cv, float(rule["rel_tol"]), v))
    return checks


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def markdown(checks: list[Check], baseline: Path, candidate: Path) -> str:
    regressed = [c for c in checks if c.verdict in ("regressed", "missing")]
    head = "❌ regression" if regressed else "✅ no regression"
    lines = [
        f"### sftbench: {head}",
        "",
        f"baseline `{baseline}`, candidate `{candidate}`",
        "",
        "| runs | metric | baseline | candidate | change | tolerance | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        change = "-" if c.change is None else f"{100 * c.change:+.1f} %"
        lines.append(
            f"| {c.key} | {c.metric} | {_fmt(c.baseline)} | {_fmt(c.candidate)} | {change} | "
            f"{100 * c.rel_tol:.0f} % | {c.verdict} |"
        )
    return "\n".join(lines) + "\n"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def table(checks: list[Check]) -> Table:
    t = Table(title="bench.compare")
    for col in ("runs", "metric", "baseline", "candidate", "change", "tolerance", "verdict"):
        t.add_column(col)
    style = {"regressed": "red", "missing": "red", "improved": "green", "ok": ""}
    for c in checks:
        change = "-" if c.change is None else f"{100 * c.change:+.1f} %"
        t.add_row(
            c.key,
            c.metric,
            _fmt(c.baseline),
            _fmt(c.candidate),
            change,
            f"{100 * c.rel_tol:.0f} %",
            f"[{style[c.verdict]}]{c.verdict}[/]" if style[c.verdict] else c.verdict,
        )
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    ap.add_argument("baseline", type=Path)
    ap.add_argument("candidate", type=Path)
    ap.add_argument("--tolerances", type=Path, default=DEFAULT_TOLERANCES, help="YAML: metric -> better, rel_tol")
    ap.add_argument(
        "--summary",
        type=Path,
        default=os.environ.get("GITHUB_STEP_SUMMARY"),
        help="append the Markdown summary here (default: $GITHUB_STEP_SUMMARY)",
    )
    a = ap.parse_args(argv)
    try:
        tolerances = yaml.safe_load(a.tolerances.read_text(encoding="utf-8"))
        checks = compare(a.baseline, a.candidate, tolerances)
    except (Unusable, OSError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    Console(width=None if sys.stdout.isatty() else 160).print(table(checks))
    if a.summary:
        with open(a.summary, "a", encoding="utf-8") as fh:
            fh.write(markdown(checks, a.baseline, a.candidate))
    return 1 if any(c.verdict in ("regressed", "missing") for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
