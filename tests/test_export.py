"""bench.export: a recorded sweep (tests/fixtures/h200-sweep) plus a failed, a skipped and an unfinished run,
exported to a local MLflow file store and to TensorBoard event files and read back with each tracker's reader."""

import shutil
import sys
from pathlib import Path

import pytest

from bench.analysis import export
from bench.core import metrics as registry
from bench.core import results

FIXTURE = Path(__file__).parent / "fixtures" / "h200-sweep"
QUALITY = {"heldout_loss": 2.5, "heldout_ppl": 12.18, "rouge_l": 0.31, "bleu4": 0.12, "generated": 8}
SKIP_REASON = "Unsloth requires an NVIDIA/AMD/Intel GPU"
FAIL_REASON = "RuntimeError: the framework broke"


def make_sweep(root: Path) -> Path:
    d = root / "sweep"
    shutil.copytree(FIXTURE, d)
    summary = results.read_json(d / "0-trl" / results.SUMMARY)
    results.write_json_atomic(d / "0-trl" / results.SUMMARY, {**summary, "quality": QUALITY})
    for name, status, reason in [("2-trl", "failed", FAIL_REASON), ("3-unsloth", "skipped", SKIP_REASON)]:
        (d / name).mkdir()
        results.write_json_atomic(d / name / results.SUMMARY, {"run": name, "framework": name.split("-")[1],
                                                              "status": status, "reason": reason})  # fmt: skip
    (d / "4-trl").mkdir()  # never finished
    return d


def loss_events(sweep: Path, run: str) -> list[dict]:
    return [e for e in results.read_jsonl(sweep / run / results.EVENTS) if "loss" in e]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports from a test run


@pytest.fixture(scope="module")
def mlflow_export(tmp_path_factory):
    """The sweep exported once to an MLflow file store: (sweep dir, client, experiment id, printed lines)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    sweep, uri = make_sweep(root), (root / "mlruns").as_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        lines = export.export(sweep, "mlflow", uri=uri)
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading the store back needs the same opt-in
        client = MlflowClient(tracking_uri=uri)
        exp_id = client.get_experiment_by_name("sftbench").experiment_id
        yield sweep, client, exp_id, lines


def mlflow_runs(client, exp_id) -> dict:
    return {r.info.run_name: r for r in client.search_runs([exp_id])}


def test_each_run_with_a_summary_becomes_one_mlflow_run(mlflow_export):
    sweep, client, exp_id, lines = mlflow_export
    assert sorted(mlflow_runs(client, exp_id)) == ["sweep/0-trl", "sweep/1-unsloth", "sweep/2-trl", "sweep/3-unsloth"]
    assert "4-trl: not exported, no summary.json (did not finish)" in lines


def test_mlflow_params_hold_the_flattened_spec_versions_and_identity(mlflow_export):
    _, client, exp_id, _ = mlflow_export
    params = mlflow_runs(client, exp_id)["sweep/0-trl"].data.params
    assert params["job.train.lora.r"] == "16" and params["job.train.lr"] == "0.002"
    assert params["job.train.lora.target_modules"] == "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    assert params["framework"] == "trl" and params["framework_version"] == "1.15.0"
    assert params["v_transformers"] == "5.17.0" and params["v_peft"] == "0.21.0"
    assert params["job_key"] == "ba815082e932" and params["seed"] == "42" and params["status"] == "ok"


def test_mlflow_loss_history_has_one_value_per_logged_step(mlflow_export):
    sweep, client, exp_id, _ = mlflow_export
    run = mlflow_runs(client, exp_id)["sweep/0-trl"]
    events = loss_events(sweep, "0-trl")
    history = sorted(client.get_metric_history(run.info.run_id, "step/loss"), key=lambda m: m.step)
    assert len(history) == len(events) == 30
    assert [m.step for m in history] == [e["step"] for e in events]
    assert [m.value for m in history] == pytest.approx([e["loss"] for e in events])
    assert history[0].timestamp == int(events[0]["time"] * 1000)  # the step's own wall-clock time
    lr = sorted(client.get_metric_history(run.info.run_id, "step/lr"), key=lambda m: m.step)
    assert [m.value for m in lr] == pytest.approx([e["lr"] for e in events])
    tps = sorted(client.get_metric_history(run.info.run_id, "step/tokens_per_s"), key=lambda m: m.step)
    assert tps[2].value == pytest.approx(events[2]["tokens"] / events[2]["step_time_s"])


def test_mlflow_summary_metrics_keep_their_registry_names(mlflow_export):
    _, client, exp_id, _ = mlflow_export
    metrics = mlflow_runs(client, exp_id)["sweep/0-trl"].data.metrics
    assert metrics["tokens_per_s"] == pytest.approx(3337.9346) and metrics["peak_vram_mb"] == 5844
    assert metrics["heldout_loss"] == 2.5 and metrics["rouge_l"] == 0.31 and metrics["bleu4"] == 0.12
    assert all(name.startswith("step/") or name in registry.METRICS for name in metrics)
    run_id = mlflow_runs(client, exp_id)["sweep/0-trl"].info.run_id
    assert [m.step for m in client.get_metric_history(run_id, "tokens_per_s")] == [30]  # at the last step


def test_failed_and_skipped_runs_carry_status_and_reason_and_no_metrics(mlflow_export):
    _, client, exp_id, _ = mlflow_export
    runs = mlflow_runs(client, exp_id)
    skipped, failed = runs["sweep/3-unsloth"], runs["sweep/2-trl"]
    assert skipped.data.params["status"] == "skipped" and skipped.data.params["reason"] == SKIP_REASON
    assert failed.data.params["status"] == "failed" and failed.data.params["reason"] == FAIL_REASON
    assert skipped.data.metrics == {} and failed.data.metrics == {}
    assert (skipped.info.status, failed.info.status) == ("KILLED", "FAILED")
    assert skipped.data.tags["mlflow.note.content"] == f"skipped: {SKIP_REASON}"  # the run's description
    assert runs["sweep/0-trl"].info.status == "FINISHED"


def test_exporting_again_leaves_exported_runs_as_they_are(mlflow_export):
    sweep, client, exp_id, _ = mlflow_export
    uri = client.tracking_uri
    lines = export.export(sweep, "mlflow", uri=uri)
    runs = mlflow_runs(client, exp_id)
    assert len(runs) == 4 and all("left as it is" in line for line in lines[:4])
    assert len(client.get_metric_history(runs["sweep/0-trl"].info.run_id, "step/loss")) == 30


@pytest.fixture(scope="module")
def tensorboard_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("tensorboard")
    sweep = make_sweep(root)
    lines = export.export(sweep, "tensorboard", logdir=root / "tb")
    return sweep, root / "tb", lines


def accumulator(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path))
    acc.Reload()
    return acc


def test_tensorboard_has_one_run_directory_per_exported_run(tensorboard_export):
    _, logdir, lines = tensorboard_export
    assert sorted(p.name for p in (logdir / "sweep").iterdir()) == ["0-trl", "1-unsloth", "2-trl", "3-unsloth"]
    assert "4-trl: not exported, no summary.json (did not finish)" in lines


def test_tensorboard_scalars_have_the_steps_and_values_of_the_events(tensorboard_export):
    sweep, logdir, _ = tensorboard_export
    for run in ("0-trl", "1-unsloth"):
        acc, events = accumulator(logdir / "sweep" / run), loss_events(sweep, run)
        loss = acc.Scalars("step/loss")
        assert [s.step for s in loss] == [e["step"] for e in events]
        assert [s.value for s in loss] == pytest.approx([e["loss"] for e in events], rel=1e-6)  # float32
        assert loss[0].wall_time == pytest.approx(events[0]["time"])
        assert len(acc.Scalars("step/lr")) == len(acc.Scalars("step/tokens_per_s")) == len(events)
    (tps,) = accumulator(logdir / "sweep" / "0-trl").Scalars("tokens_per_s")
    assert (tps.step, tps.value) == (30, pytest.approx(3337.9346))
    assert accumulator(logdir / "sweep" / "0-trl").Scalars("rouge_l")[0].value == pytest.approx(0.31)


def hparams_of(path: Path) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = accumulator(path).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.string_value or v.number_value or v.bool_value for k, v in start.hparams.items()}


def test_tensorboard_hparams_hold_params_and_a_skipped_runs_status(tensorboard_export):
    _, logdir, _ = tensorboard_export
    trl = hparams_of(logdir / "sweep" / "0-trl")
    assert trl["job.train.lora.r"] == 16 and trl["v_transformers"] == "5.17.0" and trl["job_key"] == "ba815082e932"
    skipped = hparams_of(logdir / "sweep" / "3-unsloth")
    assert skipped["status"] == "skipped" and skipped["reason"] == SKIP_REASON
    assert accumulator(logdir / "sweep" / "3-unsloth").Tags()["scalars"] == []


def test_exporting_again_to_tensorboard_writes_no_second_event_file(tensorboard_export):
    sweep, logdir, _ = tensorboard_export
    lines = export.export(sweep, "tensorboard", logdir=logdir)
    assert all("left as it is" in line for line in lines[:4])
    assert len(list((logdir / "sweep" / "0-trl").iterdir())) == 1


@pytest.mark.parametrize("tracker, module", [("mlflow", "mlflow"), ("tensorboard", "tensorboardX")])
def test_a_missing_extra_is_one_line_naming_the_install_command(tmp_path, monkeypatch, capsys, tracker, module):
    monkeypatch.setitem(sys.modules, module, None)  # import of it raises ImportError
    assert export.main([str(make_sweep(tmp_path)), "--to", tracker, "--logdir", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'sftbench[export]'" in err and module in err
    assert not (tmp_path / "tb").exists()


def test_a_bad_sweep_directory_is_one_line_naming_it(tmp_path, capsys):
    missing = tmp_path / "no-such-sweep"
    assert export.main([str(missing), "--to", "tensorboard"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {missing}: not a sweep directory\n"
    run_dir = make_sweep(tmp_path) / "0-trl"
    assert export.main([str(run_dir), "--to", "tensorboard"]) == 2
    assert f"{run_dir}: a run directory" in capsys.readouterr().err


def test_a_sweep_without_finished_runs_is_refused(tmp_path, capsys):
    (tmp_path / "empty" / "0-trl").mkdir(parents=True)
    assert export.main([str(tmp_path / "empty"), "--to", "tensorboard"]) == 2
    assert "no run with a summary.json" in capsys.readouterr().err


def test_help_names_the_extra_and_shows_an_example(capsys):
    with pytest.raises(SystemExit) as stop:
        export.main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and out.startswith("usage: python -m bench.export")
    assert "sftbench[export]" in out and "example" in out
    assert "{mlflow,tensorboard,github-action-benchmark,bencher}" in out
