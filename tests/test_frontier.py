"""The frontier search against a simulated out-of-memory threshold."""

import pytest

from bench.sweep.frontier import search


def threshold(limit):
    calls = []

    def fits(value):
        calls.append(value)
        return value <= limit

    return fits, calls


def test_doubling_then_bisection_finds_the_threshold_to_the_granularity():
    fits, calls = threshold(1000)
    best, probes = search(fits, start=128, limit=32768, granularity=64, max_probes=12)
    assert best == 960 and calls == [128, 256, 512, 1024, 768, 896, 960]
    assert probes == [(v, v <= 1000) for v in calls]


def test_everything_fits_up_to_the_limit():
    fits, calls = threshold(10**9)
    assert search(fits, 512, 4096, 256, 12) == (4096, [(512, True), (1024, True), (2048, True), (4096, True)])


def test_does_not_fit_at_minimum():
    fits, calls = threshold(100)
    assert search(fits, 128, 4096, 64, 12) == (None, [(128, False)])


@pytest.mark.parametrize("max_probes", [1, 3, 5])
def test_the_number_of_probes_is_bounded(max_probes):
    fits, calls = threshold(1000)
    best, probes = search(fits, 128, 32768, 1, max_probes)
    assert len(calls) == len(probes) <= max_probes
    assert best is None or best <= 1000


def found(framework, budget, largest, note=None, error=False):
    probes = [{"error": "probe seq_len=512 failed"}] if error else [{"value": 512, "status": "ok"}]
    return {"framework": framework, "axis": "seq_len", "budget_gb": budget, "largest": largest, "probes": probes,
            "budget_note": note}  # fmt: skip


def test_the_table_marks_budgets_that_were_not_applied_and_failed_searches():
    from rich.console import Console

    from bench.analysis.frontier_table import frame, table

    note = "train.vram_budget_gb=80 is more than this card's 79.2 GiB: whole card used"
    searches = [
        found("trl", 24.0, 12288),
        found("trl", 80.0, 4096, note=note),
        found("unsloth", 24.0, None),
        found("unsloth", 80.0, None, error=True),
    ]
    df = frame(searches).set_index("framework")
    assert df.loc["trl", "24 GB"] == "12,288" and df.loc["trl", "80 GB"] == "4,096 (budget not applied)"
    assert df.loc["unsloth", "24 GB"] == "does not fit at minimum" and df.loc["unsloth", "80 GB"] == "error"
    console = Console(width=200, record=True)
    console.print(table(searches))
    text = " ".join(console.export_text().split())  # the caption wraps at the table's width
    assert "79.2 GiB: whole card used" in text and "set_per_process_memory_fraction" in text


def test_on_a_cpu_the_table_says_no_budget_was_enforced_and_a_search_at_the_limit_is_a_lower_bound():
    from rich.console import Console

    from bench.analysis.frontier_table import frame, method, table

    cpu = [found("trl", None, 4096) | {"device": "cpu", "limit": 4096},
           found("unsloth", None, 1024) | {"device": "cpu", "limit": 4096}]  # fmt: skip
    df = frame(cpu).set_index("framework")
    assert df.loc["trl", "no budget (CPU)"] == "≥ 4,096 (limit)" and df.loc["unsloth", "no budget (CPU)"] == "1,024"
    assert method(cpu)[0].startswith("No GPU: memory budgets were not enforced")
    console = Console(width=200, record=True)
    console.print(table(cpu))
    text = console.export_text()
    assert "card" not in text and "Budget enforced" not in text


def test_a_frontier_job_without_a_budget_gets_a_readable_directory():
    from bench.core.config import budget_dir

    assert (budget_dir(None), budget_dir(24.0), budget_dir(80)) == ("nobudget", "24gb", "80gb")
