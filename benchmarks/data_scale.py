"""Data preparation at the real size of shibing624/medical's train_zh_0.json (1.95 million rows, ~1 GB).

Generates a seeded file in the real layout (JSON Lines under a .json name, instruction / input / output, Chinese
text of the real mean row size, a few exact duplicates), never committed, then runs real sweeps on it through
`python -m bench.run` (TRL, the tiny model, 3 steps, no evaluation) and prints, per run, the data preparation
time (`data_prepare_s`: selecting the rows, or finding the selection cached), the sweep process's peak RSS and
the worker's, against the targets:

- a seeded sample (2,000 rows) over 1.95 M rows: <= 30 s and <= 300 MB parent peak RSS, first run;
- first-N (1,000 rows): <= 2 s, first run;
- a later run of the sweep, and a second sweep: <= 1 s;
- the worker's peak RSS with the big source within 10 % of its peak with the bundled sample.

    python benchmarks/data_scale.py [--rows 1950000] [--dir DIR] [--keep]

The file is new on every call (new inode and times), so the first run of each sweep selects from a source the
cache has never seen. Timings taken on a loaded machine are not comparable: the load average is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench import record  # noqa: E402
from bench.data import BUNDLED_MEDICAL  # noqa: E402
from bench.sampler import host_facts  # noqa: E402

REAL_ROWS = 1_950_000  # shibing624/medical finetune/train_zh_0.json (its dataset card: 195万条)
HELDOUT_ROWS = 500
DUPLICATE_EVERY = 1000  # one row in a thousand repeats an earlier one
RUN = ("framework=trl", "train.max_steps=3", "eval.enabled=false", "train.seed=1,2")


def write_real_layout(path: Path, rows: int, seed: int) -> None:
    """`rows` rows in shibing624/medical's layout, recombined from the bundled sample with a seeded generator:
    ~500 bytes a row on average, as in the real file (987 MB for 1.95 M rows)."""
    sample = [json.loads(line) for line in (BUNDLED_MEDICAL / "train_zh_0.json").read_text("utf-8").splitlines()]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for n in range(rows):
            i = rng.randrange(n) if n and n % DUPLICATE_EVERY == 0 else n  # an exact repeat of an earlier row
            h = int.from_bytes(hashlib.blake2b(f"{seed}-{i}".encode(), digest_size=8).digest(), "little")
            a, b = sample[h % len(sample)], sample[(h >> 16) % len(sample)]
            row = {"instruction": f"{a['instruction']}（{i}）", "input": b["input"],
                   "output": b["output"] + a["output"][: (h >> 32) % 120]}  # fmt: skip
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def sweep(results: Path, name: str, *overrides: str) -> list[record.Summary]:
    """One sweep through the harness, its runs' summaries in run order; stops the benchmark if a run failed."""
    sweep_dir = results / name
    proc = subprocess.run([sys.executable, "-m", "bench.run", f"hydra.sweep.dir={sweep_dir}", *overrides],
                          cwd=REPO, capture_output=True, text=True)  # fmt: skip
    runs = [record.read_summary(d) for d in sorted(p for p in sweep_dir.iterdir() if (p / "summary.json").exists())]
    bad = [f"{r.run}: {r.status} {r.reason}" for r in runs if r.status != "ok"]
    if proc.returncode != 0 or bad or not runs:
        sys.exit(f"{name}: sweep failed (rc {proc.returncode}): {'; '.join(bad)}\n{proc.stderr[-2000:]}")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the split (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and the sweeps")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="data-scale-", dir=args.dir))
    split = work / "finetune"
    split.mkdir()
    start = time.perf_counter()
    write_real_layout(split / "train_zh_0.json", args.rows, seed=0)
    write_real_layout(split / "valid_zh_0.json", HELDOUT_ROWS, seed=1)
    size_mb = (split / "train_zh_0.json").stat().st_size / 1e6
    print(f"generated {args.rows:,} rows, {size_mb:,.0f} MB, in {time.perf_counter() - start:.0f} s: {split}")
    host = host_facts(False)
    print(f"host: {host['cpu_model']}, {host['cpus_usable']} CPUs, {host['ram_mb'] / 1024:.1f} GiB RAM; "
          f"load average before: {os.getloadavg()[0]:.2f}")  # fmt: skip
    results = work / "results"
    real = ("dataset=medical", f"dataset.path={split}", *RUN)
    bundled = sweep(results, "bundled", *RUN)
    first_n = sweep(results, "first-n", *real, "dataset.max_rows=1000", "dataset.shuffle_seed=null")
    sample = sweep(results, "sample", *real, "dataset.max_rows=2000", "dataset.shuffle_seed=42")
    again = sweep(results, "sample-again", *real, "dataset.max_rows=2000", "dataset.shuffle_seed=42", "train.seed=3")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    worker_ref = max(r.metrics["peak_rss_mb"] for r in bundled)
    rows = [("bundled sample (240 rows)", "first run", bundled[0], None, None),
            ("first-N 1,000 of the split", "first run", first_n[0], 2.0, None),
            ("first-N 1,000 of the split", "later run", first_n[1], 1.0, None),
            ("seeded sample 2,000 of the split", "first run", sample[0], 30.0, 300.0),
            ("seeded sample 2,000 of the split", "later run", sample[1], 1.0, 300.0),
            ("seeded sample 2,000 of the split", "second sweep", again[0], 1.0, None)]  # fmt: skip
    print("\n| selection | run | data prep s | parent peak RSS MB | worker peak RSS MB | worker vs bundled | "
          "targets |\n|---|---|---:|---:|---:|---:|---|")  # fmt: skip
    failed = []
    for label, which, run, prep_target, rss_target in rows:
        m = run.metrics
        worker_ratio = m["peak_rss_mb"] / worker_ref
        checks = [(prep_target is None or m["data_prepare_s"] <= prep_target, f"prep <= {prep_target} s"),
                  (rss_target is None or m["parent_peak_rss_mb"] <= rss_target, f"parent <= {rss_target} MB"),
                  (abs(worker_ratio - 1) <= 0.10, "worker within 10 %")]  # fmt: skip
        shown = [f"{text} {'ok' if ok else 'MISSED'}" for ok, text in checks if "None" not in text]
        failed += [f"{label}, {which}: {text}" for ok, text in checks if not ok]
        print(f"| {label} | {which} | {m['data_prepare_s']:.3f} | {m['parent_peak_rss_mb']:,.0f} | "
              f"{m['peak_rss_mb']:,.0f} | {worker_ratio:.2f}x | {'; '.join(shown)} |")  # fmt: skip
    print(f"\nrows selected: first-N {first_n[0].data.kept:,} of {first_n[0].data.rows:,} read; seeded sample "
          f"{sample[0].data.kept:,} of {sample[0].data.rows:,} read, {sample[0].data.duplicates:,} duplicates")
    if not args.keep:
        shutil.rmtree(work)
    if failed:
        sys.exit("targets missed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
