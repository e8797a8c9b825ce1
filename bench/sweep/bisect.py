"""Find the commit that made a metric regress: a binary search over a framework's git history, each step a
sweep of `python -m bench.run` judged by the gate's own verdict.

    python -m bench.bisect framework=trl framework.source=REPO good=REF bad=REF [metric=tokens_per_s]
                           [repeats=2] [out=DIR] [KEY=VALUE ...]

REPO is a local clone or git+URL; every other KEY=VALUE goes to bench.run as it is (the job). Each commit
measured is a sweep of `repeats` seeds (framework.source=git+file://REPO@SHA) under DIR, kept; its environment
is built once, by its commit, and reused. A commit is bad when the gate calls its mean a regression against
good's (the metric's tolerance, bench/core/metrics.py); where its 95 % CI straddles that line it is measured
again with as many more seeds before it is judged, never guessed. A commit whose runs do not finish ok (it
does not build, it fails) is skipped and named, as git bisect skip does. Before any sweep: good and bad the
same, an unknown ref, good not an ancestor of bad, or a metric the gate does not know is one line (exit 2);
after good and bad are measured, a good that is not good or a bad that is not bad stops with one line.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.analysis.gate import tolerances, verdict
from bench.core import metrics as registry
from bench.core.errors import UserError

OWN = ("good", "bad", "metric", "repeats", "out")


@dataclass
class Measured:
    commit: str
    values: list[float] = field(default_factory=list)
    why: str = ""  # where no run finished ok: what happened
    sweeps: list[Path] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    def half(self) -> float:
        from bench.analysis.replay import t_interval

        return t_interval(self.values)[1] if len(self.values) > 1 else math.inf


@dataclass
class Bisect:
    commits: list[str]  # good first, bad last, in commit order
    metric: str
    rel_tol: float
    measure: Callable[[str, int], Measured]  # (commit, seed offset) -> its runs' values
    repeats: int
    measured: dict[str, Measured] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    remeasured: list[str] = field(default_factory=list)

    @property
    def higher(self) -> bool:
        return bool(registry.get(self.metric).higher_is_better)

    def get(self, commit: str) -> Measured:
        if commit not in self.measured:
            self.measured[commit] = self.measure(commit, 0)
        return self.measured[commit]

    def is_bad(self, m: Measured) -> bool:
        """The gate's verdict against good's mean; a CI across the line is measured again first."""
        good = self.measured[self.commits[0]].mean
        line = good * (1 - self.rel_tol) if self.higher else good * (1 + self.rel_tol)
        if abs(m.mean - line) < m.half() and m.commit not in self.remeasured:
            more = self.measure(m.commit, len(m.values))
            m.values += more.values
            m.sweeps += more.sweeps
            self.remeasured.append(m.commit)
        return verdict(good, m.mean, self.higher, self.rel_tol) == "regressed"

    def ends(self) -> None:
        """good good and bad bad, or UserError in one line."""
        good, bad = self.get(self.commits[0]), self.get(self.commits[-1])
        for side, m in (("good", good), ("bad", bad)):
            if not m.values:
                raise UserError(f"{side}={m.commit[:12]} did not run ok: {m.why}")
        if not self.is_bad(bad):
            change = 100 * (bad.mean / good.mean - 1) if good.mean else 0.0
            raise UserError(f"bad={bad.commit[:12]} is not bad: {self.metric} {bad.mean:.4g} against good's "
                            f"{good.mean:.4g} ({change:+.1f} %; the gate's tolerance is {100 * self.rel_tol:g} %)")

    def run(self) -> int:
        """The index of the first bad commit (or of the last candidate, where skips leave a range)."""
        self.ends()
        lo, hi = 0, len(self.commits) - 1
        while hi - lo > 1:
            mid = self.pick(lo, hi)
            if mid is None:
                break
            if self.is_bad(self.measured[self.commits[mid]]):
                hi = mid
            else:
                lo = mid
        return hi

    def pick(self, lo: int, hi: int) -> int | None:
        """The middle commit between lo and hi that runs, nearest the middle first; None when all are skipped."""
        middle = (lo + hi) // 2
        for i in sorted(range(lo + 1, hi), key=lambda i: (abs(i - middle), i)):
            commit = self.commits[i]
            if commit in self.skipped:
                continue
            if self.get(commit).values:
                return i
            self.skipped.append(commit)
        return None


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        raise UserError(f"git {' '.join(args)} in {repo}: {why}")
    return proc.stdout.strip()


def commits_between(repo: Path, good: str, bad: str) -> list[str]:
    """good, then every commit on the path from good to bad, oldest first; UserError for bad input."""
    if good == bad:
        raise UserError(f"good={good} and bad={bad}: the same ref; a bisect needs two")
    shas = []
    for side, ref in (("good", good), ("bad", bad)):
        try:
            shas.append(git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"))
        except UserError:
            raise UserError(f"{side}={ref}: no such commit in {repo}") from None
    if shas[0] == shas[1]:
        raise UserError(f"good={good} and bad={bad} are the same commit {shas[0][:12]}")
    if subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", *shas]).returncode:
        raise UserError(f"good={good} is not an ancestor of bad={bad}: bisect searches the history between them")
    path = git(repo, "rev-list", "--reverse", "--ancestry-path", f"{shas[0]}..{shas[1]}").split()
    return [shas[0], *path]


def sweep_measure(repo: Path, out: Path, overrides: list[str], metric: str, repeats: int,
                  log: Callable[[str], None]) -> Callable[[str, int], Measured]:  # fmt: skip
    """Measure a commit: one sweep of `repeats` seeds (after `offset` seeds already measured) into `out`."""
    from bench.analysis import runs

    def measure(commit: str, offset: int) -> Measured:
        seeds = ",".join(str(s) for s in range(offset + 1, offset + repeats + 1))
        sweep = out / f"{len(list(out.glob('*')))}-{commit[:12]}"
        cmd = [sys.executable, "-m", "bench.run", *overrides, f"framework.source=git+file://{repo}@{commit}",
               f"train.seed={seeds}", f"hydra.sweep.dir={sweep}"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True)
        frame, _ = runs.load_runs(sweep) if sweep.is_dir() else (None, None)
        ok = frame[frame["status"] == "ok"] if frame is not None and not frame.empty else None
        values = [float(v) for v in ok[metric].dropna()] if ok is not None and metric in ok else []
        why = ""
        if not values:
            first = frame.iloc[0] if frame is not None and not frame.empty else None
            why = f"{first['status']}: {first['reason']}" if first is not None else "no run was recorded"
        log(f"{commit[:12]}: {metric} " + (", ".join(f"{v:.4g}" for v in values) if values else f"none ({why})")
            + f" [{time.perf_counter() - start:.0f} s]")
        return Measured(commit, values, why, [sweep])

    return measure


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    own, rest = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        (own.__setitem__(key, value) if sep and key in OWN else rest.append(arg))
    return own, rest


def repository(overrides: list[str]) -> Path:
    """The framework's git history: framework.source as a local clone, or git+URL cloned once, bare."""
    given = next((o.partition("=")[2] for o in overrides if o.startswith("framework.source=")), None)
    if not given:
        raise UserError("framework.source=REPO is needed: bisect searches a framework's git history (for "
                        "releases, python -m bench.history over a framework.version sweep)")  # fmt: skip
    given = given.strip("'\"")
    if given.startswith("git+"):
        url = given.removeprefix("git+").split("@", 1)[0]
        if url.startswith("file://"):
            return Path(url.removeprefix("file://"))
        raise UserError(f"framework.source={given}: bisect takes a local clone (git clone {url}, then its path)")
    return Path(given).expanduser().resolve()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
    start = time.perf_counter()
    try:
        own, overrides = parse(argv)
        for key in ("good", "bad"):
            if not own.get(key):
                raise UserError(f"{key}=REF is needed")
        metric, repeats = own.get("metric", "tokens_per_s"), int(own.get("repeats", "2"))
        if metric not in registry.gated():
            raise UserError(f"metric={metric}: the gate does not know it; gated: {', '.join(registry.gated())}")
        repo = repository(overrides)
        commits = commits_between(repo, own["good"], own["bad"])
        overrides = [o for o in overrides if not o.startswith("framework.source=")]
        out = Path(own.get("out") or f"results/bisect-{time.strftime('%Y%m%d-%H%M%S')}")
        out.mkdir(parents=True, exist_ok=True)
        print(f"bisect: {len(commits)} commits from good {commits[0][:12]} to bad {commits[-1][:12]}, {metric}, "
              f"{repeats} seed(s) a step, sweeps in {out}", flush=True)  # fmt: skip
        b = Bisect(commits, metric, tolerances()[metric], sweep_measure(repo, out, overrides, metric, repeats,
                   lambda line: print("  " + line, flush=True)), repeats)  # fmt: skip
        first = b.run()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary(b, first, repo, time.perf_counter() - start)))
    return 0


def summary(b: Bisect, first: int, repo: Path, seconds: float) -> list[str]:
    bad, good = b.measured[b.commits[first]], b.measured[b.commits[max(first - 1, 0)]]
    good = next((b.measured[c] for c in reversed(b.commits[:first]) if c in b.measured and b.measured[c].values),
                good)  # fmt: skip
    subject = git(repo, "log", "-1", "--format=%s", bad.commit)

    def side(m: Measured) -> str:
        half = m.half()
        ci = f"95 % CI ±{half:.3g}" if math.isfinite(half) else "one run"
        return f"{m.commit[:12]}: {b.metric} {m.mean:.4g} ({ci}, {len(m.values)} runs)"

    skipped = [c for c in b.commits[b.commits.index(good.commit) + 1 : first] if c in b.skipped]
    head = ("first bad commit: " if not skipped else "the first bad commit is one of: "
            + ", ".join(c[:12] for c in skipped) + ", ")  # fmt: skip
    lines = [f"{head}{bad.commit} {subject}", f"  last good {side(good)}", f"  first bad {side(bad)}",
             f"{len(b.measured)} commits measured ({', '.join(c[:7] for c in b.measured)}), "
             f"{sum(len(m.sweeps) for m in b.measured.values())} sweeps, {seconds:.0f} s"]  # fmt: skip
    if b.skipped:
        lines.append("skipped (did not run ok): " + "; ".join(f"{c[:12]} {b.measured[c].why}" for c in b.skipped))
    if b.remeasured:
        lines.append("measured again (a CI across the gate's line): " + ", ".join(c[:12] for c in b.remeasured))
    return lines
