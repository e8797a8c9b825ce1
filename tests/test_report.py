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
    assert trl["job.train.gradient_checkpointing"] == False and trl["job.train.lora.alpha"] == 32  # noqa: E712


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


def frame_of(rows):
    base = {"framework": "trl", "framework_version": "1.16.0", "job_key": "job-a", "seed": 42, "status": "ok",
            "fingerprint": "fp", "tokens_per_s": 100.0, "peak_vram_mb": None, "peak_rss_mb": 500.0}  # fmt: skip
    return pd.DataFrame([base | {"run": f"{i}-{r.get('framework', 'trl')}"} | r for i, r in enumerate(rows)])


def test_repeats_give_mean_95ci_and_cv():
    frame = frame_of([{"seed": seed, "tokens_per_s": tps} for seed, tps in [(1, 100.0), (2, 110.0), (3, 120.0)]])
    (row,) = report.repeats(frame).to_dict("records")
    assert row["n"] == 3 and row["tokens_per_s_mean"] == pytest.approx(110.0) and row["seeds"] == "1,2,3"
    assert row["tokens_per_s_ci95"] == pytest.approx(4.302653 * 10 / math.sqrt(3), rel=1e-5)
    assert row["tokens_per_s_cv"] == pytest.approx(10 / 110)
    assert row["peak_rss_mb_cv"] == 0.0


def test_two_releases_of_a_framework_are_two_repeat_groups_not_one():
    frame = frame_of([{"framework_version": "0.24.0", "tokens_per_s": 100.0},
                      {"framework_version": "1.16.0", "tokens_per_s": 300.0}])  # fmt: skip
    reps = report.repeats(frame)
    assert sorted(reps["framework_version"]) == ["0.24.0", "1.16.0"] and list(reps["n"]) == [1, 1]


def test_ratios_pair_each_run_with_the_baseline_run_of_its_own_job():
    """A checkpointing sweep: Unsloth with checkpointing is held against TRL with checkpointing, not a mean."""
    frame = frame_of([
        {"framework": "trl", "job_key": "ckpt-on", "peak_vram_mb": 4000.0},
        {"framework": "trl", "job_key": "ckpt-off", "peak_vram_mb": 8000.0},
        {"framework": "unsloth", "job_key": "ckpt-on", "peak_vram_mb": 2000.0},
        {"framework": "unsloth", "job_key": "ckpt-off", "peak_vram_mb": 4000.0},
    ])  # fmt: skip
    ratios = report.with_ratios(frame, "trl").set_index("run")
    assert list(ratios.loc[["2-unsloth", "3-unsloth"], "peak_vram_mb_vs_trl"]) == [0.5, 0.5]
    assert ratios.loc["2-unsloth", "vs_trl"] == "against 0-trl" and ratios.loc["3-unsloth", "vs_trl"] == "against 1-trl"


def test_no_ratio_between_runs_that_trained_on_different_tokens_or_without_a_baseline():
    frame = frame_of([
        {"framework": "trl", "fingerprint": "aaa"},
        {"framework": "llamafactory", "fingerprint": "bbb", "tokens_per_s": 210.0},  # truncated its own way
        {"framework": "unsloth", "job_key": "job-b"},  # no TRL run of this job
    ])  # fmt: skip
    ratios = report.with_ratios(frame, "trl").set_index("run")
    assert math.isnan(ratios.loc["1-llamafactory", "tokens_per_s_vs_trl"])
    assert ratios.loc["1-llamafactory", "vs_trl"] == "not comparable: other tokens than 0-trl"
    assert ratios.loc["2-unsloth", "vs_trl"] == "no trl run of this job"
    shown = report.summary_table(frame, report.with_ratios(frame, "trl")).set_index("run")
    assert shown.loc["1-llamafactory", "tokens_per_s_vs_trl"] == "not comparable: other tokens than 0-trl"
    assert shown.loc["0-trl", "tokens_per_s_vs_trl"] == "1x"


def test_the_runs_table_shows_job_key_seed_and_parity(sweep):
    report.build(sweep)
    md = (sweep / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    for col in ("job_key", "seed", "first_loss", "same_tokens", "step1_loss_rel_diff", "curve_loss_rel_diff"):
        assert col in header, col
    assert "ba815082e932" in md  # both recorded runs: one job


def test_a_quality_difference_is_called_only_outside_its_bootstrap_interval(tmp_path):
    def generations(run, name, scores):
        (tmp_path / run).mkdir(exist_ok=True)
        rows = [{"prompt": f"q{i}", "reference": "r", "prediction": "p", "rouge_l": v} for i, v in enumerate(scores)]
        results.write_jsonl(tmp_path / run / name, rows)

    generations("0-trl", results.BASE_GENERATIONS, [0.10, 0.20, 0.30, 0.40] * 5)
    generations("0-trl", results.GENERATIONS, [0.11, 0.19, 0.31, 0.39] * 5)  # noise around the base
    generations("1-trl", results.GENERATIONS, [0.50, 0.60, 0.70, 0.80] * 5)  # clearly better
    q = report.quality_differences(tmp_path, frame_of([{}, {}])).set_index("run")
    assert q.loc["0-trl", "verdict"] == "no difference (CI spans 0)"
    assert q.loc["1-trl", "verdict"] == "better than base" and q.loc["1-trl", "ci95_low"] > 0


def test_the_report_states_how_bleu_is_smoothed(sweep):
    path = sweep / "0-trl" / results.SUMMARY
    summary = json.loads(path.read_text())
    results.write_json_atomic(path, summary | {"quality": {"rouge_l": 0.08, "bleu4": 0.0097, "bleu4_4gram_matches": 0}})
    report.build(sweep)
    md = (sweep / "report.md").read_text()
    assert "## Quality" in md and "default exponential smoothing" in md
    assert pd.read_csv(sweep / "runs.csv").set_index("run").loc["0-trl", "bleu4_4gram_matches"] == 0


def test_the_base_model_reference_is_stated(sweep):
    summary_path = sweep / "0-trl" / results.SUMMARY
    summary = json.loads(summary_path.read_text())
    summary["base_quality"] = {"heldout_loss": 12.1, "rouge_l": 0.005, "bleu4": 0.0}
    results.write_json_atomic(summary_path, summary)
    report.build(sweep)
    assert "Base model before fine-tuning (evaluated in 0-trl): held-out loss 12.1" in (sweep / "report.md").read_text()


def test_time_to_quality_says_not_reached_and_the_kernels_are_their_own_system():
    target = {"job.evaluation.target_loss": 2.5}
    frame = frame_of([
        {"framework": "trl", **target, "time_to_target_s": 12.34, "steps_to_target": 20},
        {"framework": "trl+liger", **target, "time_to_target_s": None, "steps_to_target": None},
    ])  # fmt: skip
    ttq = report.time_to_quality(frame).set_index("run")
    assert ttq.loc["0-trl", "time_to_target_s"] == 12.34 and ttq.loc["0-trl", "steps_to_target"] == 20
    assert ttq.loc["1-trl+liger", "time_to_target_s"] == "not reached"
    ratios = report.with_ratios(frame, "trl").set_index("run")
    assert ratios.loc["1-trl+liger", "vs_trl"] == "against 0-trl"  # HF+Liger is compared with HF on one job
    assert report.time_to_quality(frame_of([{}])) is None
