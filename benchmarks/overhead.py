"""Harness overhead on the TRL job (CPU, tiny model).

Alternates `python -m bench.run framework=trl` with the same job trained directly in the same environment
(benchmarks/direct_trl.py) and compares the training span (on_train_begin to on_train_end); also reports
the sampler's CPU use and the parent's peak RSS from the harness runs' summaries.

    python benchmarks/overhead.py [--rounds 3] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def harness_run(out: Path, steps: int) -> dict:
    subprocess.run(
        [sys.executable, "-m", "bench.run", "framework=trl", f"results_dir={out}", f"train.max_steps={steps}"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (summary_path,) = out.glob("*/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "ok", summary
    return summary | {"run_dir": str(summary_path.parent)}


def direct_run(python: str, spec_path: str) -> float:
    env = os.environ | {"PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [python, str(REPO / "benchmarks" / "direct_trl.py"), spec_path],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])["train_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    a = ap.parse_args()
    harness_s, direct_s, sampler_pct, parent_mb, wall_s = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.rounds):
            s = harness_run(Path(tmp) / f"h{i}", a.steps)
            m = s["metrics"]
            harness_s.append(m["train_s"])
            wall_s.append(m["wall_s"])
            sampler_pct.append(100 * m["sampler_cpu_s"] / m["wall_s"])
            parent_mb.append(m["parent_peak_rss_mb"])
            direct_s.append(direct_run(s["python"], str(Path(s["run_dir"]) / "spec.json")))
            print(f"round {i + 1}: harness train {harness_s[-1]:.2f} s, direct train {direct_s[-1]:.2f} s", flush=True)
    h, d = statistics.median(harness_s), statistics.median(direct_s)
    print(
        f"trainer.train() over {a.steps} steps, median of {a.rounds}: harness {h:.2f} s, direct {d:.2f} s, "
        f"overhead {100 * (h / d - 1):+.1f} %"
    )
    print(f"end-to-end wall per harness run: median {statistics.median(wall_s):.1f} s")
    print(f"sampler CPU: max {max(sampler_pct):.2f} % of one core; parent peak RSS: max {max(parent_mb):.0f} MB")


if __name__ == "__main__":
    main()
