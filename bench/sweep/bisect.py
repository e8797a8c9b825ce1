"""Find the change that made a metric regress: a binary search over a framework's git history or over its
releases, each step a sweep of `python -m bench.run` judged by the gate's own verdict.

    python -m bench.bisect framework=trl framework.source=REPO good=REF bad=REF [metric=tokens_per_s]
                           [repeats=2] [tolerances=FILE] [out=DIR] [good-sweep=DIR] [bad-sweep=DIR]
                           [KEY=VALUE ...]
    python -m bench.bisect framework=trl good=RELEASE bad=RELEASE [...]

REPO is a local clone or git+file://PATH; without framework.source, good and bad are releases and the search
runs over every final release between them on the package index pip reads (`pip index versions`). Every
other KEY=VALUE goes to bench.run as it is (the job), except train.seed: a step takes `repeats` seeds
(default: as many as train.seed lists, else 2), seeds 1, 2, ... and, for a point measured again, the next
ones. Each point measured (a commit, through framework.source=git+file://REPO@SHA, or a release, through
framework.version) is a sweep under DIR, kept; its environment is built once, by its commit or release, and
reused. A point is bad when the gate calls its mean a regression against good's (the metric's tolerance:
bench/core/metrics.py, or FILE as for bench.compare); where its 95 % CI straddles that line it is measured
again with as many more seeds before it is judged, never guessed. A point whose runs do not finish ok (it
does not build, it fails) is skipped and named, as git bisect skip does. Before any sweep: good and bad the
same, an unknown ref or release, good not before bad, a release the runner does not drive, or a metric the
gate does not know is one line (exit 2); after good and bad are measured, a good that is not good or a bad
that is not bad stops with one line. Every sweep must run one job (its job key): a step that ran another
stops the search with one line.

good-sweep=DIR and bad-sweep=DIR give good's and bad's measurements as sweeps already run (the gate's
baseline and candidate, as action.yml passes them): their runs must have installed that commit or release,
and their values are taken as the gate judged them, neither swept nor measured again.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.analysis.gate import REGRESSED, Unusable, tolerances, verdict
from bench.core import metrics as registry
from bench.core.errors import UserError

OWN = ("good", "bad", "metric", "repeats", "tolerances", "out", "good-sweep", "bad-sweep")


@dataclass
class Measured:
    point: str  # a commit's sha or a release
    values: list[float] = field(default_factory=list)
    why: str = ""  # where no run finished ok: what happened
    sweeps: list[Path] = field(default_factory=list)
    job: str | None = None  # the job key its ok runs ran

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    def half(self) -> float:
        from bench.analysis.replay import t_interval

        return t_interval(self.values)[1] if len(self.values) > 1 else math.inf


@dataclass(frozen=True)
class History:
    """What is searched: a framework's commits (`kind` commit) or releases, good first, bad last, and the
    bench.run override that installs one of them."""

    kind: str  # "commit" | "release"
    points: list[str]
    repo: Path | None = None  # the git history of commits

    def short(self, point: str) -> str:
        return point[:12] if self.kind == "commit" else point

    def override(self, point: str) -> str:
        if self.kind == "commit":
            return f"framework.source=git+file://{self.repo}@{point}"
        return f"framework.version={point}"

    def title(self, point: str) -> str:
        """`SHA subject` of a commit, a release as it is."""
        return f"{point} {git(self.repo, 'log', '-1', '--format=%s', point)}" if self.kind == "commit" else point


@dataclass
class Bisect:
    points: list[str]  # good first, bad last, in history order
    metric: str
    rel_tol: float
    measure: Callable[[str, int], Measured]  # (point, seed offset) -> its runs' values
    repeats: int
    short: Callable[[str], str] = lambda point: point[:12]
    measured: dict[str, Measured] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    remeasured: list[str] = field(default_factory=list)
    given: dict[str, Measured] = field(default_factory=dict)  # points measured before the search (the gate's)

    def __post_init__(self) -> None:
        for point, m in self.given.items():
            self.measured[point] = self.same_job(m)

    @property
    def higher(self) -> bool:
        return bool(registry.get(self.metric).higher_is_better)

    def get(self, point: str) -> Measured:
        if point not in self.measured:
            self.measured[point] = self.same_job(self.measure(point, 0))
        return self.measured[point]

    def same_job(self, m: Measured) -> Measured:
        """`m`, or UserError when its runs ran another job than the points measured before it."""
        first = next((other for other in self.measured.values() if other.job), None)
        if m.job and first and m.job != first.job:
            where = ", ".join(map(str, m.sweeps))
            raise UserError(f"{where}: job {m.job}, not the job {first.job} that {self.short(first.point)} ran; "
                            f"a bisect compares one job")  # fmt: skip
        return m

    def is_bad(self, m: Measured) -> bool:
        """The gate's verdict against good's mean; a CI across the line is measured again first."""
        good = self.measured[self.points[0]].mean
        line = good * (1 - self.rel_tol) if self.higher else good * (1 + self.rel_tol)
        if abs(m.mean - line) < m.half() and m.point not in self.remeasured and m.point not in self.given:
            more = self.measure(m.point, len(m.values))
            m.values += more.values
            m.sweeps += more.sweeps
            self.remeasured.append(m.point)
        return verdict(good, m.mean, self.higher, self.rel_tol) == REGRESSED

    def ends(self) -> None:
        """good good and bad bad, or UserError in one line."""
        good, bad = self.get(self.points[0]), self.get(self.points[-1])
        for side, m in (("good", good), ("bad", bad)):
            if not m.values:
                raise UserError(f"{side}={self.short(m.point)} did not run ok: {m.why}")
        if not self.is_bad(bad):
            change = 100 * (bad.mean / good.mean - 1) if good.mean else 0.0
            raise UserError(f"bad={self.short(bad.point)} is not bad: {self.metric} {bad.mean:.4g} against good's "
                            f"{good.mean:.4g} ({change:+.1f} %; the gate's tolerance is {100 * self.rel_tol:g} %)")

    def run(self) -> int:
        """The index of the first bad point (or of the last candidate, where skips leave a range)."""
        self.ends()
        lo, hi = 0, len(self.points) - 1
        while hi - lo > 1:
            mid = self.pick(lo, hi)
            if mid is None:
                break
            if self.is_bad(self.measured[self.points[mid]]):
                hi = mid
            else:
                lo = mid
        return hi

    def pick(self, lo: int, hi: int) -> int | None:
        """The middle point between lo and hi that runs, nearest the middle first; None when all are skipped."""
        middle = (lo + hi) // 2
        for i in sorted(range(lo + 1, hi), key=lambda i: (abs(i - middle), i)):
            point = self.points[i]
            if point in self.skipped:
                continue
            if self.get(point).values:
                return i
            self.skipped.append(point)
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


def releases_between(framework: str, good: str, bad: str) -> list[str]:
    """good, then every final release after it up to bad, in version order, from the package index pip reads;
    UserError for bad input: the same release, one the index does not have, good not older than bad, or a
    release the runner does not drive."""
    from packaging.version import InvalidVersion, Version

    from bench.core.config import driven, frameworks

    known = frameworks()
    if framework not in known:
        raise UserError(f"framework={framework}: not registered; known: {', '.join(known)}")
    facts = known[framework]
    if good == bad:
        raise UserError(f"good={good} and bad={bad}: the same release; a bisect needs two")
    for side, release in (("good", good), ("bad", bad)):
        try:
            Version(release)
        except InvalidVersion:
            raise UserError(f"{side}={release}: not a release number") from None
    if Version(good) >= Version(bad):
        raise UserError(f"good={good} is not older than bad={bad}: bisect searches the releases between them")
    for side, release in (("good", good), ("bad", bad)):
        if facts["drives"] and not driven(release, facts["drives"]):
            raise UserError(f"{side}={release}: {framework}'s runner drives {facts['drives']} "
                            f"({facts['drives_note'] or 'conf/framework/' + framework + '.yaml'})")  # fmt: skip
    available = index_releases(facts["distribution"])
    for side, release in (("good", good), ("bad", bad)):
        if Version(release) not in {Version(v) for v in available}:
            raise UserError(f"{side}={release}: no such release of {facts['distribution']} on the package index")
    between = sorted({Version(v) for v in available if not Version(v).is_prerelease} | {Version(good), Version(bad)})
    return [str(v) for v in between if Version(good) <= v <= Version(bad)]


def index_releases(distribution: str) -> list[str]:
    """Every release of a distribution on the index pip is configured for (`pip index versions`, pre-releases
    included), newest first; UserError when pip cannot list them."""
    proc = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "--pre", distribution],
                          capture_output=True, text=True)  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("Available versions:")), None)
    if proc.returncode or line is None:
        why = (proc.stderr.strip().splitlines() or ["no versions listed"])[-1]
        raise UserError(f"pip index versions {distribution}: {why}")
    return [v.strip() for v in line.partition(":")[2].split(",") if v.strip()]


def sweep_measure(history: History, out: Path, overrides: list[str], metric: str, repeats: int,
                  log: Callable[[str], None]) -> Callable[[str, int], Measured]:  # fmt: skip
    """Measure a point: one sweep of `repeats` seeds (after `offset` seeds already measured) into `out`."""

    def measure(point: str, offset: int) -> Measured:
        seeds = ",".join(str(s) for s in range(offset + 1, offset + repeats + 1))
        sweep = out / f"{len(list(out.glob('*')))}-{history.short(point)}"
        cmd = [sys.executable, "-m", "bench.run", *overrides, history.override(point), f"train.seed={seeds}",
               f"hydra.sweep.dir={sweep}"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True)
        frame, ok, values = read_sweep(sweep, metric)
        why = ""
        if not values:
            first = frame.iloc[0] if frame is not None else None
            why = f"{first['status']}: {first['reason']}" if first is not None else "no run was recorded"
        log(f"{history.short(point)}: {metric} " + (", ".join(f"{v:.4g}" for v in values) if values else
            f"none ({why})") + f" [{time.perf_counter() - start:.0f} s]")  # fmt: skip
        return Measured(point, values, why, [sweep], job_of(ok))

    return measure


def read_sweep(sweep: Path, metric: str):
    """A sweep's runs (None where it holds none), its ok runs (None likewise) and their values of `metric`."""
    from bench.analysis import runs

    frame, _ = runs.load_runs(sweep) if sweep.is_dir() else (None, None)
    if frame is None or frame.empty:
        return None, None, []
    ok = frame[frame["status"] == "ok"]
    return frame, ok, [float(v) for v in ok[metric].dropna()] if metric in ok else []


def job_of(ok) -> str | None:
    """The one job key of a sweep's ok runs (None without any)."""
    keys = set(ok["job_key"].dropna()) if ok is not None and "job_key" in ok else set()
    return keys.pop() if len(keys) == 1 else (", ".join(sorted(keys)) or None)


def given_sweep(path: str, side: str, point: str, history: History, metric: str) -> Measured:
    """good's or bad's measurement from a sweep already run; UserError unless its ok runs installed `point`
    and measured `metric`."""
    sweep = Path(path)
    frame, ok, values = read_sweep(sweep, metric)
    if frame is None:
        raise UserError(f"{side}-sweep={path}: no sweep there")
    column = "source_commit" if history.kind == "commit" else "framework_version"
    installed = sorted(set(map(str, ok[column]))) if column in ok else []
    if installed != [point]:
        raise UserError(f"{side}-sweep={path}: its ok runs installed {', '.join(installed) or 'nothing'}, "
                        f"not {side}={history.short(point)}")  # fmt: skip
    if not values:
        raise UserError(f"{side}-sweep={path}: no ok run measured {metric}")
    return Measured(point, values, "", [sweep], job_of(ok))


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    own, rest = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        (own.__setitem__(key, value) if sep and key in OWN else rest.append(arg))
    return own, rest


def given(overrides: list[str], key: str) -> str | None:
    value = next((o.partition("=")[2] for o in overrides if o.startswith(f"{key}=")), None)
    return value.strip("'\"") if value else None


def repository(source: str) -> Path:
    """The framework's git history: framework.source as a local clone or git+file://PATH."""
    if source.startswith("git+"):
        url = source.removeprefix("git+").split("@", 1)[0]
        if url.startswith("file://"):
            return Path(url.removeprefix("file://"))
        raise UserError(f"framework.source={source}: bisect takes a local clone (git clone {url}, then its path)")
    return Path(source).expanduser().resolve()


def history_of(overrides: list[str], good: str, bad: str) -> History:
    """The commits between good and bad of framework.source's history or, without one, the releases of the
    one framework the overrides name."""
    framework = given(overrides, "framework")
    if framework and "," in framework:
        raise UserError(f"framework={framework}: one framework; a bisect searches one framework's history")
    if source := given(overrides, "framework.source"):
        repo = repository(source)
        return History("commit", commits_between(repo, good, bad), repo)
    if not framework:
        raise UserError("framework=NAME (one framework) is needed: its releases, or with framework.source=REPO "
                        "its commits, are searched")  # fmt: skip
    if given(overrides, "framework.version"):
        raise UserError("framework.version: good and bad name the releases a bisect installs; leave it out")
    return History("release", releases_between(framework, good, bad))


def read_rules(path: str | None, metric: str) -> float:
    """The gate's tolerance of `metric`: the registry's, or a tolerances FILE's as bench.compare reads it."""
    from bench.analysis.gate import read_tolerances

    try:
        return tolerances(read_tolerances(Path(path)) if path else None)[metric]
    except (Unusable, OSError) as e:
        raise UserError(f"tolerances={path}: {e}") from None


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
        seeds = given(overrides, "train.seed")
        overrides = [o for o in overrides if not o.startswith(("train.seed=", "hydra.sweep.dir="))]
        metric = own.get("metric", "tokens_per_s")
        repeats = int(own.get("repeats") or (len(seeds.split(",")) if seeds else 2))
        if metric not in registry.gated():
            raise UserError(f"metric={metric}: the gate does not know it; gated: {', '.join(registry.gated())}")
        rel_tol = read_rules(own.get("tolerances"), metric)
        history = history_of(overrides, own["good"], own["bad"])
        overrides = [o for o in overrides if not o.startswith("framework.source=")]
        known = {point: given_sweep(own[f"{side}-sweep"], side, point, history, metric)
                 for side, point in (("good", history.points[0]), ("bad", history.points[-1]))
                 if own.get(f"{side}-sweep")}  # fmt: skip
        out = Path(own.get("out") or f"results/bisect-{time.strftime('%Y%m%d-%H%M%S')}")
        out.mkdir(parents=True, exist_ok=True)
        ends = f"good {history.short(history.points[0])} to bad {history.short(history.points[-1])}"
        print(f"bisect: {len(history.points)} {history.kind}s from {ends}, {metric}, {repeats} seed(s) a step, "
              f"sweeps in {out}", flush=True)  # fmt: skip
        measure = sweep_measure(history, out, overrides, metric, repeats, lambda line: print("  " + line, flush=True))
        b = Bisect(history.points, metric, rel_tol, measure, repeats, history.short, given=known)
        first = b.run()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary(b, first, history, time.perf_counter() - start)))
    return 0


def summary(b: Bisect, first: int, history: History, seconds: float) -> list[str]:
    bad = b.measured[b.points[first]]
    good = next(b.measured[p] for p in reversed(b.points[:first]) if p in b.measured and b.measured[p].values)
    kind = history.kind

    def side(m: Measured) -> str:
        half = m.half()
        ci = f"95 % CI ±{half:.3g}" if math.isfinite(half) else "one run"
        return f"{history.short(m.point)}: {b.metric} {m.mean:.4g} ({ci}, {len(m.values)} runs)"

    skipped = [p for p in b.points[b.points.index(good.point) + 1 : first] if p in b.skipped]
    head = (f"first bad {kind}: " if not skipped else f"the first bad {kind} is one of: "
            + ", ".join(history.short(p) for p in skipped) + ", ")  # fmt: skip
    shown = ", ".join(p[:7] if kind == "commit" else p for p in b.measured)
    lines = [f"{head}{history.title(bad.point)}", f"  last good {side(good)}", f"  first bad {side(bad)}",
             f"{len(b.measured)} {kind}s measured ({shown}), {sum(len(m.sweeps) for m in b.measured.values())} "
             f"sweeps, {seconds:.0f} s"]  # fmt: skip
    if b.skipped:
        lines.append("skipped (did not run ok): " + "; ".join(f"{history.short(p)} {b.measured[p].why}"
                                                                for p in b.skipped))  # fmt: skip
    if b.remeasured:
        lines.append("measured again (a CI across the gate's line): " + ", ".join(map(history.short, b.remeasured)))
    if b.given:
        lines.append("from the sweeps given, not swept again: " + ", ".join(
            f"{history.short(p)} {', '.join(map(str, m.sweeps))}" for p, m in b.given.items()))  # fmt: skip
    return lines
