import json

import pytest
from omegaconf import OmegaConf

from bench.core import results


def test_secret_environment_values_are_redacted():
    env = {"HF_TOKEN": "hf_abcdefgh123", "WANDB_API_KEY": "k" * 20, "HOME": "/root"}
    text = "token hf_abcdefgh123 key kkkkkkkkkkkkkkkkkkkk home /root"
    assert results.redact(text, env) == "token *** key *** home /root"


def test_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    results.write_json_atomic(tmp_path / "summary.json", {"reason": "login failed with hf_secretvalue"})
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    assert "hf_secretvalue" not in (tmp_path / "summary.json").read_text()


def test_reading_jsonl_ignores_a_line_cut_short(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"ste', encoding="utf-8")
    assert results.read_jsonl(path) == [{"step": 1}, {"step": 2}]


def test_clear_run_removes_an_earlier_attempt(tmp_path):
    for name in (results.EVENTS, results.SUMMARY, results.SAMPLES):
        (tmp_path / name).write_text("old")
    (tmp_path / "keep.txt").write_text("x")
    results.clear_run(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_private_keys_and_passwords_under_other_names_are_redacted():
    key = "\n".join(["-----BEGIN OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
                     "-----END OPENSSH PRIVATE KEY-----"])  # fmt: skip
    env = {"SSH_PRIVATE_KEY": key, "DB_PASSWORD": "pa55word!", "AWS_SECRET_ACCESS_KEY": "abc/def+ghi"}
    text = f"key {key} pw pa55word! aws abc/def+ghi"
    assert results.redact(text, env) == "key *** pw *** aws ***"
    assert "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ" not in results.redact(key.splitlines()[1], env)


def test_a_password_inside_a_url_is_redacted_whatever_the_variable_is_called():
    text = "DATABASE_URL=postgres://bench:s3cr3t-pw@db.internal:5432/runs"
    assert results.redact(text, {}) == "DATABASE_URL=postgres://bench:***@db.internal:5432/runs"


def test_escaped_forms_of_a_secret_are_redacted():
    secret = 'hf_q"uo\\te'
    env = {"HF_TOKEN": secret}
    assert secret not in results.redact(json.dumps({"t": secret}), env)
    assert json.dumps(secret)[1:-1] not in results.redact(json.dumps({"t": secret}), env)
    assert repr(secret)[1:-1] not in results.redact(repr({"t": secret}), env)


SECRETS = ['hf_q"uo\\te', "hf_'both\"quotes\\", "hf_multi\nline\tsecret", "hf_ünïcødé_秘密_x"]


@pytest.mark.parametrize("secret", SECRETS)
def test_a_secret_raised_in_an_exception_and_written_as_json_csv_or_parquet_is_redacted(tmp_path, secret):
    """The repr of a value (an exception quoting it) inside JSON, CSV or Parquet: every form is scrubbed."""
    import pandas as pd

    env = {"HF_TOKEN": secret}
    try:
        raise ValueError(f"bad token {secret!r}")
    except ValueError as e:
        reason = f"{type(e).__name__}: {e}"
    for text in (json.dumps({"reason": reason}), json.dumps({"reason": reason}, ensure_ascii=False),
                 json.dumps({"log": json.dumps({"reason": reason})})):  # fmt: skip
        scrubbed = results.redact(text, env)
        assert "***" in scrubbed and secret not in json.loads(scrubbed).__repr__() + scrubbed, scrubbed
    summary = json.loads(results.redact(json.dumps({"reason": reason}), env))
    assert secret not in summary["reason"] and repr(secret)[1:-1] not in summary["reason"]
    frame = pd.DataFrame([summary])
    frame.to_csv(tmp_path / "runs.csv", index=False)
    frame.to_parquet(tmp_path / "runs.parquet", index=False)
    assert secret not in (tmp_path / "runs.csv").read_text(encoding="utf-8")
    assert secret not in pd.read_parquet(tmp_path / "runs.parquet")["reason"][0]
    assert repr(secret)[1:-1] not in results.redact(f"echo: {reason}", env)  # the console's echo of the reason


def test_secrets_a_run_passes_its_worker_are_redacted(monkeypatch):
    monkeypatch.setattr(results, "RUN_SECRETS", {})
    results.register_secrets({"MY_API_TOKEN": "tok_123456789", "MISBEHAVE": "raise"})
    assert results.redact("tok_123456789 raise", {}) == "*** raise"


def test_a_write_on_a_full_disk_is_one_line_and_leaves_no_temporary_file(small_disk):
    from tests.doubles.disk import fill

    results.write_json_atomic(small_disk / "summary.json", {"status": "ok"})
    fill(small_disk)
    with pytest.raises(results.DiskFull, match=rf"no space left on {small_disk} writing {small_disk}/summary.json"):
        results.write_json_atomic(small_disk / "summary.json", {"status": "failed", "reason": "x" * 100_000})
    assert json.loads((small_disk / "summary.json").read_text()) == {"status": "ok"}  # what was written stays
    assert not list(small_disk.glob(".*.tmp"))


def test_the_sampler_stops_writing_on_a_full_disk_and_says_so(small_disk):
    import os
    import time

    from bench.sweep.sampler import Sampler
    from tests.doubles.disk import fill

    fill(small_disk)
    sampler = Sampler(small_disk / results.SAMPLES, interval_s=0.01, gpu=False)
    sampler.attach(os.getpid())
    deadline = time.monotonic() + 120  # the first sample's write fails; on a busy machine it may come late
    while sampler.stats.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = sampler.stop()
    assert stats.error and "No space left on device" in stats.error


def test_a_report_on_a_full_disk_is_one_line(small_disk, capsys):
    import shutil
    from pathlib import Path

    from bench.analysis import report
    from tests.doubles.disk import fill

    sweep = small_disk / "sweep"
    shutil.copytree(Path(__file__).parent / "fixtures" / "h200-sweep" / "0-trl", sweep / "0-trl",
                    ignore=shutil.ignore_patterns("samples.jsonl"))  # fmt: skip
    fill(small_disk)
    assert report.main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no space left on {small_disk} writing") and err.count("\n") == 1
    assert not list(sweep.glob(".*.tmp"))


def test_hydras_record_of_the_sweep_and_the_harnesss_records_of_a_run_are_scrubbed(tmp_path, monkeypatch):
    from bench.sweep.app import scrub_multirun, write_hydra_records

    monkeypatch.setattr(results, "RUN_SECRETS", {})
    run_dir = tmp_path / "sweep" / "0-trl"
    run_dir.mkdir(parents=True)
    (tmp_path / "sweep" / "multirun.yaml").write_text("task:\n- framework.env.MY_API_TOKEN=tok_123456789\n")
    results.register_secrets({"MY_API_TOKEN": "tok_123456789"})
    scrub_multirun(tmp_path / "sweep")
    hydra = OmegaConf.create({"overrides": {"task": ["++framework.env.MY_API_TOKEN=tok_123456789"]}})
    write_hydra_records(OmegaConf.create({"framework": {"env": {"MY_API_TOKEN": "tok_123456789"}}}), hydra, run_dir)
    written = [tmp_path / "sweep" / "multirun.yaml", *sorted((run_dir / ".hydra").iterdir())]
    assert [p.name for p in written] == ["multirun.yaml", "config.yaml", "hydra.yaml", "overrides.yaml"]
    for path in written:
        assert "tok_123456789" not in path.read_text() and "MY_API_TOKEN" in path.read_text()


def test_hydra_writes_no_file_of_its_own_in_a_run_directory():
    """A disk that fills between runs meets the harness's writes, not Hydra's (its traceback, a 0-byte file)."""
    from hydra import compose, initialize_config_dir

    from bench.core.config import conf_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        hydra = compose(config_name="config", return_hydra_config=True).hydra
    assert hydra.output_subdir is None and hydra.job_logging.root is None and not hydra.job_logging.get("handlers")


@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_a_runs_records_on_a_disk_that_filled_or_turned_read_only_are_one_line_and_no_file(small_disk, disk):
    import subprocess

    from bench.core.errors import UserError
    from bench.sweep.app import write_hydra_records
    from tests.doubles.disk import fill

    run_dir = small_disk / "sweep" / "1-trl"
    run_dir.mkdir(parents=True)
    if disk == "full":
        fill(small_disk)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    hydra = OmegaConf.create({"overrides": {"task": ["framework=trl"]}})
    with pytest.raises(UserError, match=rf"^{small_disk} is read-only|^no space left on {small_disk}") as e:
        write_hydra_records(OmegaConf.create({"a": 1}), hydra, run_dir)
    assert "\n" not in str(e.value)
    assert not [p for p in run_dir.rglob("*") if p.is_file()]  # no 0-byte or temporary file left
    if disk == "read-only":
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)

