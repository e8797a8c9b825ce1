"""Regression gate between two sweeps: `python -m bench.compare BASELINE CANDIDATE`.

Runs are matched by framework, job key (bench.core.spec.JobSpec.job_key) and seed. The gated metrics, their
directions and default tolerances come from the metric registry (bench/core/metrics.py); `--tolerances FILE`
(YAML, metric: rel_tol) changes tolerances of registered metrics. Prints a table, writes a Markdown summary
(--summary, or $GITHUB_STEP_SUMMARY when set), and exits 1 on a regression, 0 otherwise, 2 when the input
cannot be compared (missing directory, no finished runs, nothing in common, an unknown metric, no check made).
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

from bench.analysis.runs import load_runs
from bench.core import metrics as registry


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


REGRESSED = "regressed"  # the verdict that fails the gate (history and bisect look for it too)


def verdict(baseline: float, candidate: float, higher_is_better: bool, rel_tol: float) -> str:
    change = (candidate - baseline) / abs(baseline) if baseline else 0.0
    worse = -change if higher_is_better else change
    if worse > rel_tol:
        return REGRESSED
    return "improved" if worse < -rel_tol else "ok"


def tolerances(overrides: dict | None = None) -> dict[str, float]:
    """Gated metric -> relative tolerance: the registry's defaults, changed by `overrides` (metric: rel_tol).
    A name the registry does not know, or one without a direction, is Unusable."""
    rules = {name: m.rel_tol for name, m in registry.gated().items()}
    for name, value in (overrides or {}).items():
        if name not in registry.METRICS:
            raise Unusable(f"tolerance for unknown metric {name!r}; known: {', '.join(registry.METRICS)}")
        if registry.METRICS[name].higher_is_better is None:
            raise Unusable(f"tolerance for {name!r}: it has no better direction, so it cannot regress")
        rel_tol = value.get("rel_tol") if isinstance(value, dict) else value
        better = value.get("better") if isinstance(value, dict) else None
        if better is not None and better != ("higher" if registry.METRICS[name].higher_is_better else "lower"):
            raise Unusable(f"tolerance for {name!r}: better={better} contradicts the registry (bench/core/metrics.py)")
        if not isinstance(rel_tol, (int, float)) or isinstance(rel_tol, bool) or rel_tol < 0:
            raise Unusable(f"tolerance for {name!r}: expected a number >= 0, got {rel_tol!r}")
        rules[name] = float(rel_tol)
    return rules


def read_tolerances(path: Path) -> dict | None:
    """A tolerances file (YAML, metric: rel_tol) as `tolerances` takes it; Unusable unless a mapping."""
    try:
        overrides = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise Unusable(f"{path}: not YAML ({e})") from None
    if overrides is not None and not isinstance(overrides, dict):
        raise Unusable(f"{path}: expected a mapping of metric: rel_tol")
    return overrides


def _runs(sweep: Path):
    if not sweep.is_dir():
        raise Unusable(f"{sweep}: not a sweep directory")
    frame, _ = load_runs(sweep)
    if frame.empty:
        raise Unusable(f"{sweep}: no finished runs")
    key = frame["framework"].astype(str) + "|" + frame["job_key"].astype(str) + "|seed " + frame["seed"].astype(str)
    return frame.assign(_key=key)


def compare(baseline: Path, candidate: Path, rules: dict[str, float]) -> list[Check]:
    base, cand = _runs(baseline), _runs(candidate)
    devices = [set(frame["device"].dropna()) if "device" in frame else set() for frame in (base, cand)]
    if all(devices) and devices[0] != devices[1]:
        raise Unusable(f"the baseline ran on {', '.join(sorted(devices[0]))}, the candidate on "
                       f"{', '.join(sorted(devices[1]))}: speed and memory do not compare across hardware")  # fmt: skip
    common = [k for k in dict.fromkeys(base["_key"]) if k in set(cand["_key"])]
    if not common:
        raise Unusable(
            "no run of the candidate matches a run of the baseline (same framework, job key and seed); "
            + job_difference(base, cand)
        )
    checks = []
    for _, b in base[(base["status"] == "ok") & ~base["_key"].isin(set(cand["_key"]))].iterrows():
        # A baseline run the candidate lacks (never ran, or its summary is gone or unreadable) fails the gate.
        checks.append(Check(f"{b['run']} → no candidate run", "status", None, None, 0.0, "missing"))
    for key in common:
        b, c = base[base["_key"] == key].iloc[0], cand[cand["_key"] == key].iloc[0]
        label = f"{b['run']} → {c['run']}"
        if b["status"] != "ok":
            continue  # nothing to hold the candidate to
        if c["status"] != "ok":
            checks.append(Check(label, "status", None, None, 0.0, "regressed"))
            continue
        for metric, rel_tol in rules.items():
            bv, cv = _num(b.get(metric)), _num(c.get(metric))
            if bv is None:
                continue
            better = bool(registry.get(metric).higher_is_better)
            v = "missing" if cv is None else verdict(bv, cv, better, rel_tol)
            checks.append(Check(label, metric, bv, cv, rel_tol, v))
    if not checks:
        raise Unusable("no check was made: the matched baseline runs have none of the gated metrics "
                       f"({', '.join(rules)}) or did not finish ok")  # fmt: skip
    return checks


def job_difference(base, cand) -> str:
    """What sets the two sweeps' jobs apart, field by field (the first run of a framework both have), as
    fms-acceleration's benchmark prints the argument diff; or the keys when no framework is shared."""
    shared = [fw for fw in dict.fromkeys(base["framework"]) if fw in set(cand["framework"])]
    if not shared:
        return f"baseline: {', '.join(sorted(set(base['_key'])))}; candidate: {', '.join(sorted(set(cand['_key'])))}"
    b, c = base[base["framework"] == shared[0]].iloc[0], cand[cand["framework"] == shared[0]].iloc[0]
    fields = sorted(k for k in set(base.columns) | set(cand.columns) if k.startswith("job.") or k == "seed")
    diff = [f"{k.removeprefix('job.')}: {b.get(k)} → {c.get(k)}" for k in fields if str(b.get(k)) != str(c.get(k))]
    return f"{shared[0]} {b['run']} → {c['run']} differ in " + ("; ".join(diff) or "fields this harness cannot see")


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
    ap = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__.splitlines()[0],
        epilog="example: python -m bench.compare results/main-sweep results/pr-sweep --tolerances tol.yaml "
        "(tol.yaml: `tokens_per_s: 0.03`); exit 0 ok, 1 regression, 2 cannot compare",
    )
    ap.add_argument("baseline", type=Path)
    ap.add_argument("candidate", type=Path)
    ap.add_argument("--tolerances", type=Path, help="YAML, metric: rel_tol (defaults: bench/core/metrics.py)")
    ap.add_argument(
        "--summary",
        type=Path,
        default=os.environ.get("GITHUB_STEP_SUMMARY"),
        help="append the Markdown summary here (default: $GITHUB_STEP_SUMMARY)",
    )
    a = ap.parse_args(argv)
    if a.baseline.resolve() == a.candidate.resolve():
        print(f"error: {a.baseline} is both the baseline and the candidate: a sweep always matches itself; compare "
              "it with another sweep of the same job", file=sys.stderr)  # fmt: skip
        return 2
    try:
        checks = compare(a.baseline, a.candidate, tolerances(read_tolerances(a.tolerances) if a.tolerances else None))
    except (Unusable, OSError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [c for c in checks if c.verdict in ("regressed", "missing")]
    out = Console(width=None if sys.stdout.isatty() else 160)
    out.print(table(checks))
    n = len(checks)
    verdict = f"regression: {len(failed)} of {n} checks failed" if failed else f"no regression ({n} checks)"
    out.print(f"verdict: {verdict}")
    if a.summary:
        with open(a.summary, "a", encoding="utf-8") as fh:
            fh.write(markdown(checks, a.baseline, a.candidate))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
