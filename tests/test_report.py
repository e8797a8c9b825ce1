"""Reports built from recorded runs (tests/fixtures/h200-sweep) plus failed, skipped and broken ones."""

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.analysis import report, runs
from bench.core import results
from tests.conftest import as_run

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
    frame, _ = runs.load_runs(sweep)
    trl = frame.set_index("run").loc["0-trl"]
    assert trl["tokens_per_s"] == pytest.approx(3337.93, rel=1e-4) and trl["peak_vram_mb"] == 5844
    assert trl["v_transformers"] == "5.17.0" and trl["model"] == "qwen2.5-0.5b-arch"
    assert trl["job.train.gradient_checkpointing"] == False and trl["job.train.lora.alpha"] == 32  # noqa: E712


def test_ratios_are_against_the_baseline_framework(sweep):
    frame, _ = runs.load_runs(sweep)
    ratios = report.with_ratios(frame, "trl").set_index("run")
    assert ratios.loc["1-unsloth", "tokens_per_s_vs_trl"] == pytest.approx(2272.74 / 3337.93, rel=1e-4)
    assert ratios.loc["0-trl", "peak_vram_mb_vs_trl"] == 1.0


def test_failed_skipped_and_unreadable_runs_are_listed_with_reasons(sweep):
    report.build(sweep)
    md = (sweep / "report.md").read_text()
    assert "RuntimeError: the framework broke" in md and "Unsloth requires an NVIDIA/AMD/Intel GPU" in md
    assert "unreadable summary.json" in md
    assert "no summary.json (did not finish)" in md
    assert ("Not compared, no readable summary (2 run directories): 4-trl: unreadable summary.json; 5-trl: no "
            "summary.json (did not finish).") in md.split("\n## ", 2)[1]  # fmt: skip


def test_html_is_self_contained(sweep):
    report.build(sweep)
    page = (sweep / "report.html").read_text()
    figures = sorted(p.name for p in sweep.glob("*.svg"))
    assert page.count("<table") >= 3 and page.count("<figure") == len(figures) >= 4
    assert "http://" not in page and "https://" not in page


def test_an_empty_sweep_still_gets_a_report(tmp_path):
    report.build(tmp_path)
    assert "No runs in this sweep: nothing was measured." in (tmp_path / "report.md").read_text()


def frame_of(rows):
    """A runs frame as load_runs gives it, one row per dict over these defaults; the system named as
    bench.analysis.findings names it (framework and version)."""
    base = {"framework": "trl", "framework_version": "1.16.0", "job_key": "job-a", "seed": 42, "status": "ok",
            "fingerprint": "fp", "tokens_per_s": 100.0, "peak_vram_mb": None, "peak_rss_mb": 500.0}  # fmt: skip
    rows = [base | {"run": f"{i}-{r.get('framework', 'trl')}"} | r for i, r in enumerate(rows)]
    return pd.DataFrame([{"system": f"{r['framework']} {r['framework_version']}"} | r for r in rows])


def test_repeats_give_mean_95ci_and_cv():
    frame = frame_of([{"seed": seed, "tokens_per_s": tps} for seed, tps in [(1, 100.0), (2, 110.0), (3, 120.0)]])
    (row,) = report.repeats(frame).to_dict("records")
    assert row["system"] == "trl 1.16.0" and row["n"] == 3 and row["seeds"] == "1,2,3"
    assert row["tokens_per_s_mean"] == pytest.approx(110.0)
    assert row["tokens_per_s_ci95"] == pytest.approx(4.302653 * 10 / math.sqrt(3), rel=1e-5)
    assert row["tokens_per_s_cv"] == pytest.approx(10 / 110)
    assert row["peak_rss_mb_cv"] == 0.0


def test_two_releases_of_a_framework_are_two_repeat_groups_not_one():
    frame = frame_of([{"framework_version": "0.24.0", "tokens_per_s": 100.0},
                      {"framework_version": "1.16.0", "tokens_per_s": 300.0}])  # fmt: skip
    reps = report.repeats(frame)
    assert sorted(reps["system"]) == ["trl 0.24.0", "trl 1.16.0"] and list(reps["n"]) == [1, 1]


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
    assert ratios.loc["0-trl", "tokens_per_s_vs_trl"] == 1.0


def md_section(md: str, heading: str) -> str:
    return md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0] if f"## {heading}\n" in md else ""


def test_the_parity_and_runs_tables_show_reference_tokens_job_and_seed(sweep):
    report.build(sweep)
    md = (sweep / "report.md").read_text()
    parity = md_section(md, "Parity").splitlines()
    header = next(line for line in parity if line.startswith("| system"))
    for col in ("reference", "same tokens", "step-1 loss Δ (relative)", "loss curve Δ (relative)", "padding Δ"):
        assert col in header, col
    unsloth = next(line for line in parity if line.startswith("| unsloth 2026.10.9"))
    assert "| trl 1.15.0 " in unsloth and "7.5e-05" in unsloth and "not recorded" in unsloth  # no fingerprint yet
    runs = md_section(md, "Runs")
    assert "| trl 1.15.0 " in runs and "| 0-trl " in runs and "ba815082" in runs and "| 42 " in runs


def test_every_table_fits_the_page_in_at_most_nine_columns(sweep):
    content = report.compose(sweep).content
    tables = [body for _, _, body in content if isinstance(body, pd.DataFrame)]
    assert len(tables) >= 6 and all(len(t.columns) <= 9 for t in tables), [list(t.columns) for t in tables]


def test_a_ratio_column_holds_only_ratios(sweep):
    """No label text in a numeric column: `1x`, `0.681x (1 run)`, `1.30x [1.21, 1.39]` or a dash."""
    content = report.compose(sweep).content
    ratio = re.compile(r"^(–|\d[\d.]*x( \(1 run\)| \[\d[\d.e+-]*, \d[\d.e+-]*\])?)$")
    cells = [(c, v) for _, _, t in content if isinstance(t, pd.DataFrame) for c in t if " vs " in c for v in t[c]]
    assert cells and all(ratio.match(v) for _, v in cells), cells


def test_a_quality_difference_is_called_only_outside_its_bootstrap_interval(tmp_path):
    def generations(run, name, scores):
        (tmp_path / run).mkdir(exist_ok=True)
        rows = [{"prompt": f"q{i}", "reference": "r", "prediction": "p", "rouge_l": v} for i, v in enumerate(scores)]
        results.write_jsonl(tmp_path / run / name, rows)

    generations("0-trl", results.BASE_GENERATIONS, [0.10, 0.20, 0.30, 0.40] * 5)
    generations("0-trl", results.GENERATIONS, [0.11, 0.19, 0.31, 0.39] * 5)  # noise around the base
    generations("1-llamafactory", results.GENERATIONS, [0.50, 0.60, 0.70, 0.80] * 5)  # clearly better
    frame = frame_of([{}, {"framework": "llamafactory"}]).assign(base_evaluated_in="0-trl")
    by_name = {name: as_run({"run": name}, run_dir=tmp_path / name) for name in ("0-trl", "1-llamafactory")}
    q = report.quality_differences(runs.RunsTable(frame, [], by_name, {"": tmp_path})).set_index("system")
    assert q.loc["trl 1.16.0", "verdict"] == "no difference (CI spans 0)"
    better = q.loc["llamafactory 1.16.0"]
    assert better["verdict"] == "better than base" and better["ci95_low"] > 0


def test_a_run_of_another_model_is_not_held_against_this_base_model(tmp_path):
    sweep = tmp_path / "sweep"
    for i, model in enumerate(["tiny", "tiny", "qwen2.5-0.5b-arch"]):
        (sweep / f"{i}-trl").mkdir(parents=True)
        base = {"base_quality": {"heldout_loss": 9.0, "rouge_l": 0.1, "bleu4": 0.0}} if i == 0 else {}
        summary = {"run": f"{i}-trl", "framework": "trl", "status": "ok", "job_key": model,
                   "quality": {"heldout_loss": 8.0}, **base}  # fmt: skip
        results.write_json_atomic(sweep / f"{i}-trl" / results.SUMMARY, summary)
        results.write_json_atomic(sweep / f"{i}-trl" / results.SPEC, {"model": {"name": model}})
    frame = runs.load_runs(sweep)[0].set_index("run")
    assert list(frame["base_evaluated_in"].fillna("none")) == ["0-trl", "0-trl", "none"]
    assert frame.loc["1-trl", "base_heldout_loss"] == 9.0 and pd.isna(frame.loc["2-trl", "base_heldout_loss"])


def test_spec_sections_are_columns_under_todays_names_whichever_version_wrote_them(sweep):
    old = json.loads((sweep / "0-trl" / results.SPEC).read_text())
    assert {"data", "evaluation"} <= set(old)  # written before the sections were renamed dataset and eval
    new = {{"data": "dataset", "evaluation": "eval"}.get(k, k): v for k, v in old.items()}
    (sweep / "1-unsloth" / results.SPEC).write_text(json.dumps(new))
    frame = runs.load_runs(sweep)[0].set_index("run")
    for run in ("0-trl", "1-unsloth"):
        row = frame.loc[run]
        assert row["job.dataset.tokenize"] == old["data"]["tokenize"]
        assert row["job.eval.prompts"] == old["evaluation"]["prompts"] and row["dataset"] == old["data"]["name"]
    assert not [c for c in frame.columns if c.startswith(("job.data.", "job.evaluation."))]


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
    target = {"job.eval.target_loss": 2.5}
    frame = frame_of([
        {"framework": "trl", **target, "time_to_target_s": 12.34, "steps_to_target": 20},
        {"framework": "trl+liger", **target, "time_to_target_s": None, "steps_to_target": None},
    ])  # fmt: skip
    ttq = report.time_to_quality(frame).set_index("system")
    assert ttq.loc["trl 1.16.0", "time to target (s)"] == "12.34" and ttq.loc["trl 1.16.0", "steps to target"] == "20"
    assert ttq.loc["trl+liger 1.16.0", "time to target (s)"] == "not reached"
    ratios = report.with_ratios(frame, "trl").set_index("run")
    assert ratios.loc["1-trl+liger", "vs_trl"] == "against 0-trl"  # HF+Liger is compared with HF on one job
    assert report.time_to_quality(frame_of([{}])) is None
