"""bench.export to the dashboards maintainers run: github-action-benchmark's custom JSON and Bencher Metric
Format, checked against their documented shapes (written down here from their docs)."""

import json
import math
import shutil
from pathlib import Path

import pytest

from bench.analysis import dashboards, export
from bench.core import metrics as registry
from tests.test_findings import measured, write_run

FIXTURE = Path(__file__).parent / "fixtures" / "h200-sweep"


def github_action_benchmark_shape(data) -> None:
    """github-action-benchmark, "customBiggerIsBetter" / "customSmallerIsBetter": a JSON array of objects with
    `name` (string), `unit` (string) and `value` (number) required, `range` and `extra` (strings) optional."""
    assert isinstance(data, list)
    for item in data:
        assert set(item) <= {"name", "unit", "value", "range", "extra"}
        assert isinstance(item["name"], str) and isinstance(item["unit"], str)
        assert isinstance(item["value"], int | float) and not isinstance(item["value"], bool)
        assert all(isinstance(item[k], str) for k in ("range", "extra") if k in item)


def bencher_metric_format_shape(data) -> None:
    """Bencher Metric Format: an object of benchmark name -> object of measure slug -> {value (number, required),
    lower_value and upper_value (numbers, optional)}."""
    assert isinstance(data, dict)
    for benchmark, measures in data.items():
        assert isinstance(benchmark, str) and isinstance(measures, dict) and measures
        for slug, m in measures.items():
            assert isinstance(slug, str) and slug == slug.lower() and "_" not in slug
            assert set(m) <= {"value", "lower_value", "upper_value"} and isinstance(m["value"], int | float)
            if "lower_value" in m:
                assert m["lower_value"] <= m["value"] <= m["upper_value"]


@pytest.fixture
def repeated(tmp_path):
    """Two systems, three seeds each, on one job."""
    sweep = tmp_path / "sweep"
    for i, (fw, seed, tps) in enumerate([("trl", 1, 100.0), ("trl", 2, 104.0), ("trl", 3, 98.0),
                                         ("axolotl", 1, 230.0), ("axolotl", 2, 236.0), ("axolotl", 3, 229.0)]):
        write_run(sweep, f"{i}-{fw}", fw, seed=seed, **measured(tps, 600.0 + seed, 2.0 + seed / 100))  # fmt: skip
    return sweep


def test_github_action_benchmark_files_one_entry_per_system_and_metric_with_the_ci_as_range(repeated, tmp_path):
    assert export.main([str(repeated), "--format", "github-action-benchmark", "--out", str(tmp_path / "o")]) == 0
    bigger = json.loads((tmp_path / "o" / dashboards.GAB_FILES[True]).read_text())
    smaller = json.loads((tmp_path / "o" / dashboards.GAB_FILES[False]).read_text())
    github_action_benchmark_shape(bigger)
    github_action_benchmark_shape(smaller)
    tps = {e["name"]: e for e in bigger if e["name"].endswith("tokens_per_s")}
    trl = tps["trl 1.16.0 job same tokens_per_s"]
    assert trl["value"] == pytest.approx(302 / 3) and trl["unit"] == "tokens/s"
    assert trl["range"].startswith("± ") and float(trl["range"][2:]) > 0
    assert "job same" in trl["extra"] and "data fingerprint fp" in trl["extra"] and "seeds 1, 2, 3" in trl["extra"]
    assert all(registry.get(e["name"].rsplit(" ", 1)[1]).higher_is_better is False for e in smaller)
    assert any(e["name"].endswith("peak_rss_mb") for e in smaller)


def test_bencher_metric_format_with_the_ci_as_lower_and_upper_values(repeated, tmp_path):
    assert export.main([str(repeated), "--to", "bencher", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / dashboards.BENCHER_FILE).read_text())
    bencher_metric_format_shape(data)
    axolotl = data["axolotl 1.16.0 job same"]["tokens-per-s"]
    assert axolotl["value"] == pytest.approx(695 / 3) and axolotl["lower_value"] < axolotl["value"]


def test_one_run_gives_a_value_without_a_range(tmp_path):
    sweep = tmp_path / "h200"
    shutil.copytree(FIXTURE, sweep)
    found = dashboards.entries(sweep)
    gab = dashboards.github_action_benchmark(found)
    github_action_benchmark_shape(gab[True])
    assert gab[True] and all("range" not in e for e in gab[True])
    bmf = dashboards.bencher(found)
    bencher_metric_format_shape(bmf)
    assert all(set(m) == {"value"} and math.isfinite(m["value"]) for b in bmf.values() for m in b.values())
