"""Data preparation at the real size of shibing624/medical's train_zh_0.json (1.95 million rows, ~1 GB).

Generates a seeded file in the real layout (JSON Lines under a .json name, instruction / input / output, Chinese
text of the real mean row size, a few exact duplicates), never committed, and a 2,000-row file of the same
layout; then runs real sweeps on them through `python -m bench.run` (TRL, the tiny model, 3 steps, no
evaluation, three seeds each) and prints, per selection, the data preparation time of the sweep's first run and
of its later runs (`data_prepare_s`: selecting the rows, or finding the selection cached), the sweep process's
peak RSS and the worker's, against the targets:

- a seeded sample (2,000 rows) over 1.95 M rows: <= 30 s and <= 300 MB parent peak RSS, first run;
- first-N (1,000 rows): <= 2 s, first run;
- a later run of the sweep, and a second sweep: <= 1 s;
- the worker's peak RSS with the big source within 10 % of its peak with a small one. A worker's peak varies by
  about that much between identical runs here, so the check takes the median of three runs, and compares the
  same selection settings on the 2,000-row file (the same number of rows trained on; the bundled sample's 240
  rows are printed beside it).

    python benchmarks/data_scale.py [--rows 1950000] [--dir DIR] [--keep]

Each call salts one row of the files, so the cache has never seen them: the first run of a sweep selects from
the source. Timings taken on a loaded machine are not comparable: the load average is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.core import record  # noqa: E402
from bench.core.data import BUNDLED_MEDICAL  # noqa: E402
from bench.sweep.sampler import host_facts  # noqa: E402

REAL_ROWS = 1_950_000  # shibing624/medical finetune/train_zh_0.json (its dataset card: 195万条)
HELDOUT_ROWS = 500
DUPLICATE_EVERY = 1000  # one row in a thousand repeats an earlier one
SMALL_ROWS = 2_000
RUN = ("framework=trl", "train.max_steps=3", "eval.enabled=false", "train.seed=1,2,3")
FIRST_N = ("dataset.max_rows=1000", "dataset.shuffle_seed=null")
SAMPLE = ("dataset.max_rows=2000", "dataset.shuffle_seed=42")


def write_real_layout(path: Path, rows: int, seed: int, salt: str = "") -> None:
    """`rows` rows in shibing624/medical's layout, recombined from the bundled sample with a seeded generator:
    ~500 bytes a row on average, as in the real file (987 MB for 1.95 M rows). `salt` goes into the first row."""
    sample = [json.loads(line) for line in (BUNDLED_MEDICAL / "train_zh_0.json").read_text("utf-8").splitlines()]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for n in range(rows):
            i = rng.randrange(n) if n and n % DUPLICATE_EVERY == 0 else n  # an exact repeat of an earlier row
            h = int.from_bytes(hashlib.blake2b(f"{seed}-{i}".encode(), digest_size=8).digest(), "little")
            a, b = sample[h % len(sample)], sample[(h >> 16) % len(sample)]
            row = {"instruction": f"{a['instruction']}（{i}{salt if n == 0 else ''}）", "input": b["input"],
                   "output": b["output"] + a["output"][: (h >> 32) % 120]}  # fmt: skip
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def sweep(results: Path, name: str, *overrides: str) -> list[record.Summary]:
    """One sweep through the harness, its runs' summaries in run order; stops the benchmark if a run failed."""
    sweep_dir = results / name
    proc = subprocess.run([sys.executable, "-m", "bench.run", f"hydra.sweep.dir={sweep_dir}", *overrides],
                          cwd=REPO, capture_output=True, text=True)  # fmt: skip
    dirs = sorted(p for p in sweep_dir.iterdir() if (p / "summary.json").exists()) if sweep_dir.is_dir() else []
    runs = [record.read_summary(d) for d in dirs]
    bad = [f"{r.run}: {r.status} {r.reason}" for r in runs if r.status != "ok"]
    if proc.returncode != 0 or bad or not runs:
        sys.exit(f"{name}: sweep failed (rc {proc.returncode}): {'; '.join(bad)}\n{proc.stderr[-2000:]}")
    return runs


def split(work: Path, name: str, rows: int, salt: str) -> Path:
    """A directory in shibing624/medical's layout: train_zh_0.json of `rows` rows and a held-out valid_zh_0.json."""
    d = work / name
    d.mkdir()
    write_real_layout(d / "train_zh_0.json", rows, seed=0, salt=salt)
    write_real_layout(d / "valid_zh_0.json", HELDOUT_ROWS, seed=1, salt=salt)
    return d


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdicts(checks: list[tuple[bool, str]]) -> str:
    return "; ".join(f"{text} {'ok' if ok else 'MISSED'}" for ok, text in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the split (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and the sweeps")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="data-scale-", dir=args.dir))
    start, salt = time.perf_counter(), f"#{os.getpid()}-{time.time_ns()}"
    big, small = split(work, "big", args.rows, salt), split(work, "small", SMALL_ROWS, salt)
    size_mb = (big / "train_zh_0.json").stat().st_size / 1e6
    took = time.perf_counter() - start
    print(f"generated {args.rows:,} rows ({size_mb:,.0f} MB) and {SMALL_ROWS:,} rows in {took:.0f} s: {work}")
    host = host_facts(False)
    print(f"host: {host['cpu_model']}, {host['cpus_usable']} CPUs, {host['ram_mb'] / 1024:.1f} GiB RAM; "
          f"load average before: {os.getloadavg()[0]:.2f}")  # fmt: skip
    results = work / "results"
    on = {name: ("dataset=medical", f"dataset.path={d}") for name, d in (("big", big), ("small", small))}
    bundled = sweep(results, "bundled", *RUN)
    kinds = {"first-N 1,000": ("first-n", FIRST_N), "seeded sample 2,000": ("sample", SAMPLE)}
    runs = {(kind, where): sweep(results, f"{name}-{where}", *on[where], *settings, *RUN)
            for kind, (name, settings) in kinds.items() for where in ("small", "big")}  # fmt: skip
    again = sweep(results, "sample-again", *on["big"], *SAMPLE, *RUN[:-1], "train.seed=4")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    worker = {key: median([r.metrics["peak_rss_mb"] for r in rs]) for key, rs in runs.items()}
    bundled_mb = median([r.metrics["peak_rss_mb"] for r in bundled])
    print(f"\n| selection from the 1.95 M-row split | run | data prep s | parent peak RSS MB | worker peak RSS MB, "
          f"median of 3 | vs the same on {SMALL_ROWS:,} rows | vs the bundled sample | targets |\n"
          "|---|---|---:|---:|---:|---:|---:|---|")  # fmt: skip
    failed = []
    targets = {"first-N 1,000": (2.0, None), "seeded sample 2,000": (30.0, 300.0)}
    for kind, (first_s, parent_mb) in targets.items():
        mine, ref = worker[(kind, "big")], worker[(kind, "small")]
        first, *later = runs[(kind, "big")]
        slowest_later = max(later, key=lambda r: r.metrics["data_prepare_s"])
        for which, run, prep_target in (("first run", first, first_s), ("later runs (slowest)", slowest_later, 1.0)):
            m = run.metrics
            checks = [(m["data_prepare_s"] <= prep_target, f"prep <= {prep_target:g} s")]
            if parent_mb is not None:
                checks.append((m["parent_peak_rss_mb"] <= parent_mb, f"parent <= {parent_mb:g} MB"))
            if run is first:
                checks.append((abs(mine / ref - 1) <= 0.10, "worker within 10 %"))
            failed += [f"{kind}, {which}: {text}" for ok, text in checks if not ok]
            print(f"| {kind} | {which} | {m['data_prepare_s']:.3f} | {m['parent_peak_rss_mb']:,.0f} | {mine:,.0f} | "
                  f"{mine / ref:.2f}x | {mine / bundled_mb:.2f}x | {verdicts(checks)} |")  # fmt: skip
    m = again[0].metrics
    checks = [(m["data_prepare_s"] <= 1.0, "prep <= 1 s")]
    failed += [f"seeded sample 2,000, a second sweep: {text}" for ok, text in checks if not ok]
    print(f"| seeded sample 2,000 | a second sweep | {m['data_prepare_s']:.3f} | {m['parent_peak_rss_mb']:,.0f} | "
          f"{m['peak_rss_mb']:,.0f} (one run) | | | {verdicts(checks)} |")
    first_n, sample = runs[("first-N 1,000", "big")][0].data, runs[("seeded sample 2,000", "big")][0].data
    print(f"\nrows selected: first-N {first_n.kept:,} of {first_n.rows:,} read; seeded sample {sample.kept:,} of "
          f"{sample.rows:,} read, {sample.duplicates:,} duplicates; bundled sample: worker median {bundled_mb:,.0f} MB")
    if not args.keep:
        shutil.rmtree(work)
    if failed:
        sys.exit("targets missed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
