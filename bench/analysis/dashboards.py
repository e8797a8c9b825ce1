"""A sweep's results in the formats of the benchmark dashboards framework maintainers already run.

- github-action-benchmark (benchmark-action/github-action-benchmark): its custom tools `customBiggerIsBetter`
  and `customSmallerIsBetter` each read a JSON list of `{name, unit, value, range, extra}` (`value` a number,
  `range` and `extra` strings); one file per direction.
- Bencher (bencher.dev): Bencher Metric Format, `{benchmark: {measure: {value, lower_value, upper_value}}}`.

One entry per system, job and gated metric (those with a default gate tolerance, bench/core/metrics.py): the
mean over the system's ok runs of the job, its 95 % CI over them (Student's t) as `range` or as the lower and
upper values (none from one run), the job key, data fingerprint and seeds in `extra`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from bench.core import metrics as registry

GAB_FILES = {True: "github-action-benchmark-bigger.json", False: "github-action-benchmark-smaller.json"}
BENCHER_FILE = "bencher.json"


@dataclass(frozen=True)
class Entry:
    system: str
    job_key: str
    metric: str
    values: tuple[float, ...]
    fingerprint: str
    seeds: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.system} job {self.job_key[:8]}"

    def interval(self) -> tuple[float, float | None]:
        """The mean and the half width of its 95 % CI (None from one run)."""
        from bench.analysis.replay import t_interval  # scipy: only when a dashboard file is written

        mean, half = t_interval(list(self.values))
        return mean, (half if len(self.values) > 1 and math.isfinite(half) else None)


def entries(sweep_dir: Path) -> list[Entry]:
    """Every system's gated metrics over its ok runs of each job."""
    from bench.analysis import runs  # pandas: loaded only when exporting

    frame, _ = runs.load_runs(sweep_dir)
    gated = [m for m in registry.METRICS.values() if m.rel_tol is not None and m.higher_is_better is not None]
    ok = frame[frame["status"] == "ok"] if not frame.empty else frame
    out = []
    for (system, job_key), group in ok.groupby(["system", "job_key"], sort=False):
        for m in gated:
            values = tuple(float(v) for v in group.get(m.name, []) if v is not None and math.isfinite(float(v)))
            if values:
                seeds = tuple(str(s) for s in group["seed"])
                fingerprint = next((f for f in group["fingerprint"] if isinstance(f, str) and f), "")
                out.append(Entry(system, job_key, m.name, values, fingerprint, seeds))
    return out


def github_action_benchmark(found: list[Entry]) -> dict[bool, list[dict]]:
    """Per direction (bigger is better: True), the custom tool's list."""
    out: dict[bool, list[dict]] = {True: [], False: []}
    for e in found:
        metric = registry.get(e.metric)
        mean, half = e.interval()
        item = {"name": f"{e.name} {e.metric}", "unit": metric.unit, "value": mean,
                "extra": f"job {e.job_key}; data fingerprint {e.fingerprint or '-'}; {len(e.values)} run(s), "
                         f"seeds {', '.join(e.seeds)}"}  # fmt: skip
        if half is not None:
            item["range"] = f"± {half:.6g}"
        out[bool(metric.higher_is_better)].append(item)
    return out


def bencher(found: list[Entry]) -> dict[str, dict[str, dict[str, float]]]:
    """Bencher Metric Format: benchmark (system and job) -> measure (the metric) -> value and its CI."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for e in found:
        mean, half = e.interval()
        measure = {"value": mean} | ({"lower_value": mean - half, "upper_value": mean + half} if half else {})
        out.setdefault(e.name, {})[e.metric.replace("_", "-")] = measure
    return out


def write(sweep_dir: Path, to: str, out_dir: Path) -> list[str]:
    """The dashboard's file(s) for the sweep, in `out_dir`; what was written, one line each."""
    found = entries(sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if to == "bencher":
        files = {out_dir / BENCHER_FILE: bencher(found)}
    else:
        files = {out_dir / GAB_FILES[big]: items for big, items in github_action_benchmark(found).items()}
    for path, data in files.items():
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return [f"{path}: {len(data)} {'benchmarks' if to == 'bencher' else 'entries'}" for path, data in files.items()]
