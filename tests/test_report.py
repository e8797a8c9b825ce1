"""Reports built from recorded runs (tests/fixtures/h200-sweep) plus failed, skipped and broken ones."""

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench import report, results

FIXTURE = Path(__file__).parent / "fixtures" / "h200-sweep"


@pytest.fixture
def sweep(tmp_path):
    d = tmp_path / "sweep"
    shutil.copytree(FIXTURE, d)
    for name, status, reason in [
        ("2-trl", "failed", "RuntimeError: the framework broke"),
        ("3-unsloth", "skipped", "Unsloth requires an NVIDIA/AMD/Intel GPU"),
    ]:
        (d / name).mkdir()
        results.write_json_atomic(
            d / name / results.SUMMARY,
            {"run": name, "framework": name.split("-")[1], "status": status, "reason": reason},
        )
    (d / "4-trl").mkdir()
    (d / "4-trl" / results.SUMMARY).write_text('{"run": "4-trl", "stat')  # half-written by a killed writer
    (d / "5-trl").mkdir()  # never finished
    return d


def test_report_files_are_written(sweep):
    paths = report.build(sweep)
    assert all(p.exists() for p in paths.values())
    frame = pd.read_parquet(sweep / "runs.parquet")
    assert sorted(frame["run"]) == ["0-trl", "1-unsloth", "2-trl", "3-unsloth"]
    assert len(pd.read_csv(sweep / "runs.csv")) == 4


def test_runs_table_has_one_row_per_run_with_metrics_and_versions(sweep):
    frame, _ = report.load_runs(sweep)
    trl = frame.set_index("run").loc["0-trl"]
    assert trl["tokens_per_s"] == pytest.approx(3337.93, rel=1e-4) and trl["peak_vram_mb"] == 5844
    assert trl["v_transformers"] == "5.17.0" and trl["model"] == "qwen2.5-0.5b-arch"


def test_ratios_are_against_the_baseline_framework(sweep):
    frame, _ = report.load_runs(sweep)
    ratios = report.with_ratios(frame, "trl").set_index("run")
    assert ratios.loc["1-unsloth", "tokens_per_s_vs_trl"] == pytest.approx(2272.74 / 3337.93, rel=1e-4)
    assert ratios.loc["0-trl", "peak_vram_mb_vs_trl"] == 1.0


def test_failed_skipped_and_unreadable_runs_are_listed_with_reasons(sweep):
    report.build(sweep)
    md = (sweep / "report.md").read_text()
    assert "RuntimeError: the framework broke" in md and "Unsloth requires an NVIDIA/AMD/Intel GPU" in md
    assert "unreadable summary.json" in md
    assert "no summary.json (did not finish)" in md


def test_html_is_self_contained(sweep):
    report.build(sweep)
    page = (sweep / "report.html").read_text()
    assert page.count("<table") >= 3 and page.count('src="data:image/png;base64,') == 3
    assert "http://" not in page and "https://" not in page


def test_an_empty_sweep_still_gets_a_report(tmp_path):
    report.build(tmp_path)
    assert "No finished runs" in (tmp_path / "report.md").read_text()


def test_repeats_give_mean_95ci_and_cv():
    frame = pd.DataFrame(
        [
            {
                "run": f"{i}-trl",
                "framework": "trl",
                "status": "ok",
                "seed": seed,
                "model": "tiny",
                "lr": 1e-3,
                "tokens_per_s": tps,
                "peak_vram_mb": None,
                "peak_rss_mb": 500.0,
            }
            for i, (seed, tps) in enumerate([(1, 100.0), (2, 110.0), (3, 120.0)])
        ]
    )
    (row,) = report.repeats(frame).to_dict("records")
    assert row["n"] == 3 and row["tokens_per_s_mean"] == pytest.approx(110.0)
    assert row["tokens_per_s_ci95"] == pytest.approx(4.302653 * 10 / math.sqrt(3), rel=1e-5)
    assert row["tokens_per_s_cv"] == pytest.approx(10 / 110)
    assert row["peak_rss_mb_cv"] == 0.0


def test_the_base_model_reference_is_stated(sweep):
    summary_path = sweep / "0-trl" / results.SUMMARY
    summary = json.loads(summary_path.read_text())
    summary["base_quality"] = {"heldout_loss": 12.1, "rouge_l": 0.005, "bleu4": 0.0}
    results.write_json_atomic(summary_path, summary)
    report.build(sweep)
    assert "Base model before fine-tuning (evaluated in 0-trl): held-out loss 12.1" in (sweep / "report.md").read_text()
