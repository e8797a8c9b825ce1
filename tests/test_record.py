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
    the data selection, is empty for runs recorded before it; so is notes, as those runs had none, and so are the
    phase_*_ms columns, as those runs did not time phases, the published_* figures, which they did not carry, and
    source_commit and source_repo, as none installed a framework.source)."""
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


def test_steps_and_samples_are_written_and_read_as_their_records(tmp_path):
    path = tmp_path / results.EVENTS
    steps = [record.Step(s, step_time_s=0.5, tokens=10, trainable_tokens=4, len_sq=100, time=1.0 + s, loss=2.0 / s)
             for s in (1, 2)]  # fmt: skip
    with open(path, "w", encoding="utf-8") as fh:
        for s in steps:
            record.write_line(fh, s)
    assert record.read_lines(path, record.Step) == steps
    gpu = record.GpuSample(index=0, used_mb=100.0, other_pids=[7])
    sample = record.Sample(t=0.1, time=1.0, rss_mb=500.0, cpu_pct=90.0, gpus=[gpu])
    with open(tmp_path / results.SAMPLES, "w", encoding="utf-8") as fh:
        record.write_line(fh, sample)
    assert record.read_lines(tmp_path / results.SAMPLES, record.Sample) == [sample]


def test_a_last_line_cut_short_is_ignored_and_a_bad_line_is_named(tmp_path):
    path = tmp_path / results.EVENTS
    good = '{"step": 1, "step_time_s": 0.5, "tokens": 10, "trainable_tokens": 4, "len_sq": 100, "time": 1.0}\n'
    path.write_text(good + '{"step": 2, "step_t', encoding="utf-8")  # the worker was killed mid-line
    assert [s.step for s in record.read_lines(path, record.Step)] == [1]
    path.write_text(good + good.replace('"tokens": 10', '"tokens": "ten"') + good, encoding="utf-8")
    with pytest.raises(record.RecordError, match=r"events.jsonl: .*tokens='ten': expected int \(line 2\)"):
        record.read_lines(path, record.Step)
    path.write_text(good + '{"step": 2, "loss": 1.0}\n', encoding="utf-8")  # a whole line with fields missing
    with pytest.raises(record.RecordError, match=r"events.jsonl: .*missing key\(s\) step_time_s.*\(line 2\)"):
        record.read_lines(path, record.Step)


def test_a_run_whose_steps_cannot_be_read_is_unreadable_with_the_reason(tmp_path):
    run = tmp_path / "0-trl"
    run.mkdir()
    record.write_summary(run, record.Summary(run="0-trl", status="ok"))
    (run / results.EVENTS).write_text('{"step": "one"}\n{}\n', encoding="utf-8")
    runs, unreadable = record.load_sweep(tmp_path)
    assert runs == [] and len(unreadable) == 1 and "events.jsonl" in unreadable[0].why


def test_no_module_but_the_record_parses_a_run_file():
    """Reading a run file goes through bench/core/record.py (benchmarks/ too); benchmarks/bare_trl.py is the
    one exception on purpose: it runs the job with no harness code at all."""
    import ast
    import re

    from tests.conftest import REPO

    names = re.compile(r"\b(EVENTS|SAMPLES|SUMMARY|WORKER|GENERATIONS|SPEC)\b|"
                       r"(events|samples|generations)\.jsonl|(summary|worker|spec)\.json")  # fmt: skip
    readers = {"loads", "load", "read_json", "read_jsonl", "read_text"}
    allowed = {"bench/core/record.py", "bench/core/results.py", "bench/core/spec.py", "benchmarks/bare_trl.py"}
    found = []
    for path in [*(REPO / "bench").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        rel = str(path.relative_to(REPO))
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in readers:
                if isinstance(node.func.value, ast.Name) and node.func.value.id == "JobSpec":
                    continue  # spec.json read as the job it is
                segment = ast.get_source_segment(source, node) or ""
                if names.search(segment) and rel not in allowed:
                    found.append(f"{rel}:{node.lineno}: {segment[:80]}")
    assert not found, found
