"""A memory-frontier sweep's result as a table, and the statement of how its budgets were applied.

Read by bench.frontier (printed at the end of the search) and bench.report (the report's frontier section)
from the sweep's frontier.json files; it imports neither.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.core import results

METHOD = "torch.cuda.set_per_process_memory_fraction(budget / card memory) in each probe's worker"


def load(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every search's result in a frontier sweep, in job order."""
    found = []
    for run_dir in results.run_dirs(sweep_dir):
        if (run_dir / results.FRONTIER).is_file():
            found.append(json.loads((run_dir / results.FRONTIER).read_text(encoding="utf-8")))
    return found


def on_cpu(found: list[dict[str, Any]]) -> bool:
    return bool(found) and all(f.get("device") == "cpu" for f in found)


def method(found: list[dict[str, Any]]) -> list[str]:
    """How the budgets were applied: the method, then the worker's word wherever one was not. Without a GPU
    no budget was enforced, and the statement says that instead."""
    notes = sorted({f["budget_note"] for f in found if f.get("budget_note")})
    if on_cpu(found):
        return ["No GPU: memory budgets were not enforced; the probes ran on the CPU.", *notes]
    return [f"Budget enforced with {METHOD}.", *notes]


def cell(found: dict[str, Any]) -> str:
    """One framework x budget entry of the table; a search that reached frontier.limit found a lower bound."""
    if any("error" in p for p in found["probes"]):
        return "error"
    if found["largest"] is None:
        text = "does not fit at minimum"
    elif found.get("limit") is not None and found["largest"] >= found["limit"]:
        text = f"≥ {found['largest']:,} (limit)"
    else:
        text = f"{found['largest']:,}"
    return text + (" (budget not applied)" if found.get("budget_note") else "")


def budget_label(budget_gb: float | None, cpu: bool = False) -> str:
    if budget_gb is None:
        return "no budget (CPU)" if cpu else "whole GPU"
    return f"{budget_gb:g} GB"


def row_label(found: dict[str, Any], jobs: int) -> str:
    """The framework, and which job when the sweep searched more than one (a model or LoRA sweep)."""
    return found["framework"] if jobs <= 1 else f"{found['framework']} (job {found.get('job_key') or '?'})"


def frame(found: list[dict[str, Any]]):
    """The frontier table as a DataFrame (framework rows, budget columns) for the report."""
    import pandas as pd

    jobs = len({f.get("job_key") for f in found})
    cpu = on_cpu(found)
    rows = [
        {"framework": row_label(f, jobs), "budget": budget_label(f["budget_gb"], cpu), "largest": cell(f)}
        for f in found
    ]
    return pd.DataFrame(rows).pivot(index="framework", columns="budget", values="largest").reset_index()


def table(found: list[dict[str, Any]]) -> Table:
    """Framework x budget -> the largest value that trained, like Unsloth's context-length tables."""
    budgets = sorted({f["budget_gb"] for f in found}, key=lambda b: (b is None, b or 0))
    axis = found[0]["axis"] if found else "seq_len"
    t = Table(title=f"largest {axis} that trains", caption="\n".join(method(found)), title_justify="left")
    t.add_column("framework")
    for b in budgets:
        t.add_column(budget_label(b, on_cpu(found)), justify="right")
    jobs = len({f.get("job_key") for f in found})
    labels = dict.fromkeys(row_label(f, jobs) for f in found)
    for label in labels:
        hits = {f["budget_gb"]: f for f in found if row_label(f, jobs) == label}
        t.add_row(label, *(cell(hits[b]) if b in hits else "-" for b in budgets))
    return t
