"""Harness overhead: one TRL job through `python -m bench.run` and as a plain TRL script, interleaved.

Round by round, the harness run (framework=trl), then the same job bare (benchmarks/bare_trl.py on that run's
spec.json, in the same environment and on the same device). Compares the median steady-state step time
(the first skip_steps steps left out) and the training span, and reports the sampler's CPU use and the
parent's peak RSS from the harness runs' summaries. Device and precision follow the job (CPU or GPU).

    python benchmarks/overhead.py [--rounds 3] [--steps 40] [--overrides "model=qwen2.5-0.5b-arch ..."]
                                  [--python /opt/py/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def harness_run(out: Path, steps: int, overrides: list[str], python: str | None) -> dict:
    """One bench.run of the job (evaluation off: neither side's steps include it); its summary and step times."""
    cmd = [sys.executable, "-m", "bench.run", "framework=trl", f"results_dir={out}", f"train.max_steps={steps}",
           "eval.enabled=false", *([f"framework.python={python}"] if python else []), *overrides]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"harness run failed ({shlex.join(cmd)}):\n{proc.stderr[-3000:]}")
    (summary_path,) = out.glob("*/*/summary.json")
    summary = json.loads(summary_path.read_text())
    if summary["status"] != "ok":
        sys.exit(f"harness run {summary['status']}: {summary.get('reason')}\n{summary.get('log_tail', '')[-3000:]}")
    events = [json.loads(line) for line in (summary_path.parent / "events.jsonl").read_text().splitlines() if line]
    times, losses = [e["step_time_s"] for e in events], [e.get("loss") for e in events]
    return summary | {"run_dir": summary_path.parent, "step_times_s": times, "losses": losses}


def bare_run(python: str, spec_path: Path) -> dict:
    """The same job as a plain TRL script; only the framework's own site directory on its path, as the
    harness's worker gets it (SFTBENCH_TRL_PYTHONPATH on machines without PyPI)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TOKENIZERS_PARALLELISM": "false"}
    if os.environ.get("SFTBENCH_TRL_PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["SFTBENCH_TRL_PYTHONPATH"]
    script = REPO / "benchmarks" / "bare_trl.py"
    proc = subprocess.run([python, str(script), str(spec_path)], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"bare run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def steady_median(step_times_s: list[float], skip_steps: int) -> float:
    steady = step_times_s[skip_steps:]
    if not steady:
        sys.exit(f"no steady-state steps: {len(step_times_s)} steps, skip_steps={skip_steps}; raise --steps")
    return statistics.median(steady)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--overrides", default="", help="passed on to bench.run, e.g. 'model=qwen2.5-0.5b-arch'")
    ap.add_argument("--python", help="a prepared interpreter with TRL (framework.python=...)")
    a = ap.parse_args()
    overrides = shlex.split(a.overrides)
    ratios, span_ratios, sampler_pct, parent_mb, wall_s = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.rounds):
            h = harness_run(Path(tmp) / f"h{i}", a.steps, overrides, a.python)
            skip = json.loads((h["run_dir"] / "spec.json").read_text())["skip_steps"]
            b = bare_run(h["python"], h["run_dir"] / "spec.json")
            # Step 1 trains the base model (LoRA's B starts at zero): another loss there means another job.
            same = abs(h["losses"][0] - b["losses"][0]) <= 1e-3 * abs(h["losses"][0])
            m = h["metrics"]
            h_step, b_step = steady_median(h["step_times_s"], skip), steady_median(b["step_times_s"], skip)
            ratios.append(h_step / b_step)
            span_ratios.append(m["train_s"] / b["train_s"])
            wall_s.append(m["wall_s"])
            sampler_pct.append(100 * m["sampler_cpu_s"] / m["wall_s"])
            parent_mb.append(m["parent_peak_rss_mb"])
            print(f"round {i + 1} ({b['device']}, {b['precision']}): step time harness {1000 * h_step:.1f} ms, "
                  f"bare {1000 * b_step:.1f} ms (x{ratios[-1]:.3f}); training span harness {m['train_s']:.2f} s, "
                  f"bare {b['train_s']:.2f} s"
                  + ("" if same else f"; NOT THE SAME JOB: step-1 loss {h['losses'][0]:.6g} vs {b['losses'][0]:.6g}"),
                  flush=True)  # fmt: skip
    print(f"median step-time ratio harness/bare over {a.rounds} rounds (steps > {skip} of {a.steps}): "
          f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); "
          f"training span ratio {statistics.median(span_ratios):.3f}")  # fmt: skip
    print(f"end-to-end wall per harness run: median {statistics.median(wall_s):.1f} s")
    print(f"sampler CPU: max {max(sampler_pct):.2f} % of one core; parent peak RSS: max {max(parent_mb):.0f} MB")


if __name__ == "__main__":
    main()
