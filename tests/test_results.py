from bench import results


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
