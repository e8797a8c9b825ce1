"""bench.core.record: one writer and one checking reader for what a run writes; recorded sweeps load through it."""

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.analysis import report
from bench.core import record, results

FIXTURES = Path(__file__).parent / "fixtures"
SWEEPS = ("cpu-sweep", "h200-sweep")  # recorded by this harness (CPU, format 1) and an older one (H200)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_recorded_run_loads_through_the_record(sweep):
    runs, unreadable = record.load_sweep(FIXTURES / sweep)
    assert runs and not unreadable
    for run in runs:
        assert run.summary.status in ("ok", "skipped") and run.summary.job_key
        if run.summary.status == "ok":
            assert run.worker is not None and run.worker.status == "ok" and run.events and run.samples
            assert run.summary.hardware is not None and run.summary.metrics["tokens_per_s"] > 0


@pytest.mark.parametrize("sweep", SWEEPS)
def test_the_runs_table_of_a_recorded_sweep_is_unchanged(sweep, tmp_path):
    """runs.csv of a recorded sweep, column for column, as the harness wrote it before summaries were typed
    (columns job.dataset.* and job.eval.* were job.data.* and job.evaluation.* then; data_prepare_s, added with
    the data selection, is empty for runs recorded before it; so is notes, as those runs had none)."""
    copy = shutil.copytree(FIXTURES / sweep, tmp_path / sweep)
    report.write(report.compose(copy), copy)
    got = pd.read_csv(copy / "runs.csv", dtype=str, keep_default_na=False)
    expected = pd.read_csv(FIXTURES / f"{sweep}.runs.csv", dtype=str, keep_default_na=False)
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got, expected)


def test_a_summary_round_trips_and_names_its_format(tmp_path):
    s = record.Summary("0-trl", "ok", framework="trl", metrics={"tokens_per_s": 12.5, "vram_method": "nvml"},
                       fingerprint=record.Fingerprint(examples=3, first_batches_sha256="ab"))  # fmt: skip
    record.write_summary(tmp_path, s)
    assert json.loads((tmp_path / results.SUMMARY).read_text())["format"] == record.FORMAT
    assert record.read_summary(tmp_path) == dataclasses.replace(s, format=record.FORMAT)


def write(run_dir: Path, data: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / results.SUMMARY).write_text(json.dumps(data), encoding="utf-8")
    return run_dir


def test_a_mistyped_field_is_one_line_naming_file_field_and_version(tmp_path):
    run = write(tmp_path / "0-trl", {"run": "0-trl", "status": "ok", "format": 2, "git_commit": "f00dfeed" * 5,
                                     "metrics": {"tokens_per_s": [1, 2]}})  # fmt: skip
    with pytest.raises(record.RecordError) as e:
        record.read_summary(run)
    message = str(e.value)
    assert "\n" not in message and str(run / results.SUMMARY) in message
    assert "summary.metrics.tokens_per_s=[1, 2]" in message and "summary format 2, harness f00dfeedf00d" in message


def test_an_unknown_field_and_a_newer_format_are_refused_by_name(tmp_path):
    with pytest.raises(record.RecordError, match=r"unknown key\(s\) throughput"):
        record.read_summary(write(tmp_path / "a", {"status": "ok", "throughput": 3}))
    with pytest.raises(record.RecordError, match="format 9, newer than this harness reads"):
        record.read_summary(write(tmp_path / "b", {"status": "ok", "format": 9}))


def test_an_older_summary_without_newer_fields_loads_with_them_empty(tmp_path):
    """The H200 sweep's format: no system, host, data, fingerprint, notes or sampler; `hardware: {}` meant
    the worker never reported it."""
    old = json.loads((FIXTURES / "h200-sweep" / "1-unsloth" / results.SUMMARY).read_text())
    s = record.read_summary(write(tmp_path / "1-unsloth", old | {"hardware": {}}))
    assert s.format == 1 and s.system is None and s.name == "unsloth" and s.hardware is None
    assert s.host == record.Host() and s.notes == [] and s.overrides == old["overrides"]


def test_a_truncated_summary_is_one_unreadable_run_and_the_others_load(tmp_path):
    (tmp_path / "0-trl").mkdir()
    record.write_summary(tmp_path / "0-trl", record.Summary("0-trl", "ok"))
    write(tmp_path / "1-trl", {}).joinpath(results.SUMMARY).write_text('{"run": "1-trl", "sta', encoding="utf-8")
    runs, unreadable = record.load_sweep(tmp_path)
    assert [r.name for r in runs] == ["0-trl"]
    assert [(u.run, u.why) for u in unreadable] == [("1-trl", "unreadable summary.json")]


def test_a_worker_report_that_is_not_one_reads_as_none_or_one_line(tmp_path):
    assert record.read_worker(tmp_path) is None  # the worker died before writing it
    (tmp_path / results.WORKER).write_text(json.dumps({"status": "done"}), encoding="utf-8")
    with pytest.raises(record.RecordError, match="worker.status='done': expected one of ok"):
        record.read_worker(tmp_path)
