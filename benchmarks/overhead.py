"""Harness overhead, counterbalanced: one TRL job through `python -m bench.run` and as a plain TRL script.

Every round runs each arm once: the harness with its defaults, the harness with its step phases off, with its
sampler off and with its progress display off (which part costs what), and the bare script twice
(benchmarks/bare_trl.py on a harness run's spec.json, in the same environment and on the same device). Odd
rounds run the arms in ARMS order, even rounds in reverse (ABBA), so a machine that drifts over the session
favours no arm; one warm-up harness run, not counted, comes first. Per round, each arm's ratio to that round's
bare run: the median steady-state step time (the first skip_steps left out) and the training span. Over
rounds: the median ratio with a distribution-free interval (order statistics; its coverage printed, as few
rounds cannot reach 95 %) and every round's ratio. The second bare run is the noise floor: the same ratio
between two identical runs in the same places of the order says how large a difference this machine can
resolve.

    python benchmarks/overhead.py [--rounds 8] [--steps 60] [--warmup 1] [--target-pct 2]
                                  [--overrides "model=qwen2.5-0.5b-arch ..."] [--python /opt/py/bin/python]

A run that fails stops the benchmark with that run's reason, never a ratio from the rounds that worked.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench's own helpers, where the harness runs from a checkout rather than installed
from bench.analysis.assess import SHARED_CPU_CORES  # noqa: E402
from bench.core import record, results  # noqa: E402
from bench.core.spec import JobSpec  # noqa: E402
from bench.sweep.sampler import busy_cpu_s, host_facts  # noqa: E402

LEVEL = 0.95  # the interval's target coverage


@dataclass(frozen=True)
class Arm:
    name: str
    label: str
    bare: bool = False
    overrides: tuple[str, ...] = ()  # passed on to bench.run
    progress: bool = True


# The sampler off: one sample as the worker starts, none after (its thread sleeps through the run).
SAMPLER_OFF = "sampler.interval_s=86400"
PHASES_OFF = "profile.phases=false"  # no hooks timing each step's phases (bench/worker/phases.py)
# Order within a round. bare and bare2 are neighbours, harness the neighbour of bare on the other side, and
# reversing keeps those distances: the noise floor (bare2 / bare) is measured in the harness's own placement.
ARMS = (
    Arm("no-phases", "harness, step phases off", overrides=(PHASES_OFF,)),
    Arm("no-sampler", "harness, sampler off", overrides=(SAMPLER_OFF,)),
    Arm("bare2", "bare again (noise floor)", bare=True),
    Arm("bare", "bare", bare=True),
    Arm("harness", "harness (defaults)"),
    Arm("no-progress", "harness, progress display off", progress=False),
)
ARM = {arm.name: arm for arm in ARMS}
COMPARED = ("harness", "no-phases", "no-sampler", "no-progress", "bare2")  # rows of the table, each over bare
# harness / harness-without-part
PARTS = (("no-phases", "step phases"), ("no-sampler", "sampler"), ("no-progress", "progress display"))

# bench.run with its progress display off, for the attribution arm: no rich Live thread redrawing the bar and
# no polling of the events file that feeds it. Patched from outside so bench.run stays as users run it.
WITHOUT_PROGRESS = """
import inspect, runpy
import rich.progress
from bench.sweep import launch

class Hidden(rich.progress.Progress):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **(kwargs | {"disable": True}))

shown = launch.launch
def unshown(*args, **kwargs):
    bound = inspect.signature(shown).bind(*args, **kwargs)
    bound.arguments["progress"] = None
    return shown(*bound.args, **bound.kwargs)

rich.progress.Progress, launch.launch = Hidden, unshown
runpy.run_module("bench.run", run_name="__main__", alter_sys=True)
"""


class RunFailed(Exception):
    """A run of the benchmark did not train: its reason ends the benchmark."""


@dataclass
class Run:
    step_s: float  # median steady-state step time
    train_s: float  # the training span
    first_loss: float  # step 1 trains the base model (LoRA's B starts at zero): another loss means another job
    others_cores: float  # CPU other processes took while it ran, in cores
    metrics: dict = field(default_factory=dict)  # the harness run's summary metrics


@dataclass(frozen=True)
class Interval:
    median: float
    lo: float
    hi: float
    coverage: float  # probability the interval holds the true median


def own_cpu_s() -> float:
    """CPU seconds of this process and of every child it has waited for (a run's whole tree)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_measured(cmd: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    """subprocess.run, and the cores other processes kept busy meanwhile (the machine's busy CPU seconds less
    this process's and the run's): a round on a shared machine says so."""
    busy, own, start = busy_cpu_s(psutil.cpu_times()), own_cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    others = busy_cpu_s(psutil.cpu_times()) - busy - (own_cpu_s() - own)
    return proc, max(0.0, others) / (time.perf_counter() - start)


def steady_median(step_times_s: list[float], skip_steps: int) -> float:
    steady = step_times_s[skip_steps:]
    if not steady:
        raise RunFailed(f"no steady-state steps: {len(step_times_s)} steps, skip_steps={skip_steps}; raise --steps")
    return statistics.median(steady)


def harness_command(arm: Arm) -> list[str]:
    return [sys.executable, "-m", "bench.run"] if arm.progress else [sys.executable, "-c", WITHOUT_PROGRESS]


def harness_run(arm: Arm, out: Path, steps: int, overrides: list[str], python: str | None) -> tuple[Run, Path, str]:
    """One bench.run of the job (evaluation off: neither side's steps include it); the run, its spec.json and
    the worker's interpreter."""
    interpreter = [f"framework.python={python}"] if python else []
    cmd = [*harness_command(arm), "framework=trl", f"results_dir={out}", f"train.max_steps={steps}",
           "eval.enabled=false", *interpreter, *overrides, *arm.overrides]  # fmt: skip
    proc, others = run_measured(cmd, cwd=REPO)
    summaries = list(out.glob(f"*/*/{results.SUMMARY}"))
    if not summaries:
        raise RunFailed(f"exit {proc.returncode}, no summary ({shlex.join(cmd)}):\n{proc.stderr[-3000:]}")
    recorded = record.load_run(summaries[0].parent)
    summary, events = recorded.summary, recorded.events
    if summary.status != "ok":
        raise RunFailed(f"{summary.status}: {summary.reason}\n{(summary.log_tail or '')[-3000:]}")
    skip = JobSpec.load(recorded.dir / results.SPEC).skip_steps
    m = summary.metrics
    run = Run(steady_median([e.step_time_s for e in events], skip), m["train_s"], events[0].loss, others, m)
    return run, recorded.dir / results.SPEC, summary.python


def bare_run(python: str, spec_path: Path) -> tuple[Run, dict]:
    """The same job as a plain TRL script; only the framework's own site directory on its path, as the
    harness's worker gets it (SFTBENCH_TRL_PYTHONPATH on machines without PyPI). Also its device and precision."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TOKENIZERS_PARALLELISM": "false"}
    if os.environ.get("SFTBENCH_TRL_PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["SFTBENCH_TRL_PYTHONPATH"]
    proc, others = run_measured([python, str(REPO / "benchmarks" / "bare_trl.py"), str(spec_path)], env=env)
    if proc.returncode:
        raise RunFailed(f"exit {proc.returncode}:\n{proc.stderr[-3000:]}")
    b = json.loads(proc.stdout.strip().splitlines()[-1])
    skip = JobSpec.load(spec_path).skip_steps
    run = Run(steady_median(b["step_times_s"], skip), b["train_s"], b["losses"][0], others)
    return run, {"device": b["device"], "precision": b["precision"]}


def median_interval(values: list[float], level: float = LEVEL) -> Interval:
    """The median and a distribution-free interval for it: order statistics x(k) and x(n+1-k), the innermost
    pair whose binomial coverage reaches `level`; with too few values for that, the full range and the
    coverage it has (two rounds: 50 %)."""
    xs, n = sorted(values), len(values)

    def coverage(k: int) -> float:  # P(x(k) <= true median <= x(n+1-k)) for any continuous distribution
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 1
    while k < n // 2 and coverage(k + 1) >= level:
        k += 1
    return Interval(statistics.median(xs), xs[k - 1], xs[n - k], coverage(k))


def floor_pct(noise: Interval) -> float:
    """The resolution: how far from 1 two identical runs' ratio reaches, at either end of its interval."""
    return 100 * max(abs(noise.lo - 1), abs(noise.hi - 1))


def order_of(round_index: int) -> tuple[Arm, ...]:
    return ARMS if round_index % 2 == 0 else ARMS[::-1]


def run_round(i: int, tmp: Path, a, overrides: list[str], ctx: dict) -> dict[str, Run]:
    """One round: every arm once, in this round's order; the bare runs read the spec of the harness run
    before them (the first arm of either order is a harness run)."""
    runs: dict[str, Run] = {}
    for arm in order_of(i):
        try:
            if arm.bare:
                runs[arm.name], ctx["device"] = bare_run(ctx["python"], ctx["spec"])
            else:
                runs[arm.name], ctx["spec"], ctx["python"] = harness_run(arm, tmp / f"r{i}-{arm.name}", a.steps,
                                                                         overrides, a.python)  # fmt: skip
        except RunFailed as e:
            sys.exit(f"round {i + 1}, {arm.label}: the run failed, so no ratio: {e}")
    return runs


def round_line(i: int, runs: dict[str, Run]) -> str:
    bare = runs["bare"]
    ratios = ", ".join(f"{name} x{runs[name].step_s / bare.step_s:.3f}" for name in COMPARED)
    differs = [name for name, r in runs.items() if abs(r.first_loss - bare.first_loss) > 1e-3 * abs(bare.first_loss)]
    others = max(r.others_cores for r in runs.values())
    same = f"; NOT THE SAME JOB: step-1 loss of {', '.join(differs)} differs from bare's" if differs else ""
    return (f"round {i + 1} ({', '.join(arm.name for arm in order_of(i))}): bare {1000 * bare.step_s:.1f} ms/step; "
            f"{ratios}; other processes up to {others:.2f} cores{same}")  # fmt: skip


def ratios(rounds: list[dict[str, Run]], num: str, den: str, attr: str = "step_s") -> list[float]:
    return [getattr(r[num], attr) / getattr(r[den], attr) for r in rounds]


def interval_text(iv: Interval) -> str:
    return f"{iv.median:.3f} [{iv.lo:.3f}, {iv.hi:.3f}]"


def table(rounds: list[dict[str, Run]]) -> list[str]:
    n = len(rounds)
    coverage = median_interval([0.0] * n).coverage
    lines = [f"step-time ratio to bare, median over {n} rounds [{100 * coverage:.1f} % interval, order statistics]; "
             "training-span ratio; each round's step-time ratio"]  # fmt: skip
    for name in COMPARED:
        step, span = ratios(rounds, name, "bare"), ratios(rounds, name, "bare", "train_s")
        each = " ".join(f"{x:.3f}" for x in step)
        lines.append(f"  {ARM[name].label:<32} {interval_text(median_interval(step))}  "
                     f"span {statistics.median(span):.3f}  rounds {each}")  # fmt: skip
    return lines


def attribution(rounds: list[dict[str, Run]]) -> list[str]:
    lines = ["attribution: harness / harness with the part off, paired by round (above 1: the part costs)"]
    for off, part in PARTS:
        lines.append(f"  {part:<32} {interval_text(median_interval(ratios(rounds, 'harness', off)))}")
    return lines


def target_verdict(harness: Interval, floor: float, target_pct: float) -> str:
    """Whether the harness meets the step-time target, said only where the machine can resolve the target."""
    lo, hi = 100 * (harness.lo - 1), 100 * (harness.hi - 1)
    if floor > target_pct:
        return f"cannot resolve < {target_pct:g} % on this machine: the noise floor (±{floor:.1f} %) is wider"
    if hi < target_pct:
        return f"under the {target_pct:g} % target (the interval's upper end: {hi:+.1f} %)"
    if lo > target_pct:
        return f"over the {target_pct:g} % target (the interval's lower end: {lo:+.1f} %)"
    return f"undecided: the interval [{lo:+.1f} %, {hi:+.1f} %] holds the {target_pct:g} % target (more rounds)"


def verdict(rounds: list[dict[str, Run]], target_pct: float) -> list[str]:
    noise_step = median_interval(ratios(rounds, "bare2", "bare"))
    noise_span = median_interval(ratios(rounds, "bare2", "bare", "train_s"))
    floor = floor_pct(noise_step)
    harness = median_interval(ratios(rounds, "harness", "bare"))
    parts = "; ".join(f"{part} {against_floor(statistics.median(ratios(rounds, 'harness', off)), floor)}"
                      for off, part in PARTS)  # fmt: skip
    return [
        f"resolution on this machine: ±{floor:.1f} % step time, ±{floor_pct(noise_span):.1f} % training span "
        "(bare vs bare, the same rounds: the farther end of its interval from 1)",
        f"harness vs bare, step time: {against_floor(harness.median, floor)}; by attribution: {parts}",
        f"verdict: {target_verdict(harness, floor, target_pct)}",
    ]


def against_floor(ratio: float, floor: float) -> str:
    """A median ratio as a difference in %, and whether the machine's noise floor can tell it from none."""
    diff = 100 * (ratio - 1)
    if abs(diff) <= floor:
        return f"{diff:+.1f} % (within the noise floor)"
    return f"{diff:+.1f} % (outside the noise floor by {abs(diff) - floor:.1f} points)"


def shared(runs: dict[str, Run]) -> bool:
    """Whether other processes took more than the shared-machine threshold during any run of a round."""
    return max(r.others_cores for r in runs.values()) > SHARED_CPU_CORES


def quiet_only(rounds: list[dict[str, Run]], target_pct: float) -> list[str]:
    """The harness ratio and noise floor again over the rounds nobody else computed in (a threshold fixed
    before the data: bench.analysis.assess's), where some were shared; no figure from fewer than two."""
    quiet = [r for r in rounds if not shared(r)]
    if len(quiet) == len(rounds):
        return []
    head = f"quiet rounds only ({len(quiet)} of {len(rounds)}: other processes at most {SHARED_CPU_CORES:.2f} cores)"
    if len(quiet) < 2:
        return [f"{head}: too few for a figure"]
    harness = median_interval(ratios(quiet, "harness", "bare"))
    floor = floor_pct(median_interval(ratios(quiet, "bare2", "bare")))
    return [f"{head}: harness {interval_text(harness)} ({100 * harness.coverage:.1f} % interval), "
            f"noise floor ±{floor:.1f} %; {target_verdict(harness, floor, target_pct)}"]  # fmt: skip


def costs(rounds: list[dict[str, Run]]) -> list[str]:
    """The default harness runs' own records: the sampler's cost, the parent's memory, the end-to-end wall."""
    m = [r["harness"].metrics for r in rounds]
    pct = [x["sampler_cpu_pct"] for x in m if "sampler_cpu_pct" in x]
    tick = [x["sampler_tick_ms"] for x in m if "sampler_tick_ms" in x]
    sampler = f"{max(pct):.2f} % of one core while training (max over rounds)" if pct else "no figure while training"
    sampler += f", {statistics.median(tick):.2f} ms CPU per sample (median)" if tick else ""
    others = [r.others_cores for rs in rounds for r in rs.values()]
    n_shared = sum(1 for rs in rounds if shared(rs))
    return [
        f"sampler CPU: {sampler}; parent peak RSS max {max(x['parent_peak_rss_mb'] for x in m):.0f} MB; "
        f"end-to-end wall per harness run median {statistics.median(x['wall_s'] for x in m):.1f} s",
        f"other processes while the runs ran: median {statistics.median(others):.2f} cores, max {max(others):.2f}; "
        f"{n_shared} of {len(rounds)} rounds above {SHARED_CPU_CORES:.2f} cores (a shared machine)",
    ]


def machine_line(device: dict) -> str:
    f = host_facts()
    gpus = f", GPUs {', '.join(f['gpus'])}" if f.get("gpus") else ""
    return (f"machine: {f['cpu_model']}, {f['cpus_usable']} of {f['cpu_cores']} logical cores usable, "
            f"{f['ram_mb'] / 1024:.0f} GiB RAM{gpus}; trained on {device['device']} in {device['precision']}; "
            f"load average {os.getloadavg()[0]:.2f} at the end")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8, help="at least 2; 6 or more for a 95 %% interval")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=1, help="harness runs before the rounds, not counted")
    ap.add_argument("--target-pct", type=float, default=2.0, help="the step-time overhead to resolve")
    ap.add_argument("--overrides", default="", help="passed on to bench.run, e.g. 'model=qwen2.5-0.5b-arch'")
    ap.add_argument("--python", help="a prepared interpreter with TRL (framework.python=...)")
    a = ap.parse_args()
    if a.rounds < 2:
        ap.error("--rounds: at least 2 (an interval and a noise floor need two rounds)")
    overrides = shlex.split(a.overrides)
    print(f"overhead: the TRL job ({a.overrides or 'defaults'}), {a.steps} steps a run, {a.rounds} rounds of "
          f"{len(ARMS)} runs, order reversed every other round, {a.warmup} warm-up run(s)", flush=True)  # fmt: skip
    ctx: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in range(a.warmup):
            try:
                harness_run(ARM["harness"], Path(tmp) / f"warmup{w}", a.steps, overrides, a.python)
            except RunFailed as e:
                sys.exit(f"warm-up run failed: {e}")
        rounds = []
        for i in range(a.rounds):
            rounds.append(run_round(i, Path(tmp), a, overrides, ctx))
            print(round_line(i, rounds[-1]), flush=True)
        skip = JobSpec.load(ctx["spec"]).skip_steps
    print(f"steady state: the steps after the first {skip} of {a.steps}")
    summary = [*table(rounds), *attribution(rounds), *verdict(rounds, a.target_pct)]
    print("\n".join([*summary, *quiet_only(rounds, a.target_pct), *costs(rounds), machine_line(ctx["device"])]))


if __name__ == "__main__":
    main()
