from pathlib import Path

from bench import results
from bench.launch import Outcome
from bench.sampler import SamplerStats
from bench.summary import load_summaries, loss_metrics, status_of, steady_state, sweep_table


def events(n=6, tokens=100, step_time_s=0.5):
    return [
        {
            "step": s,
            "loss": 5.0 - 0.1 * s,
            "lr": 1e-3,
            "grad_norm": 1.0,
            "tokens": tokens,
            "trainable_tokens": tokens // 2,
            "step_time_s": step_time_s,
        }
        for s in range(1, n + 1)
    ]


def outcome(**kw):
    base = dict(returncode=0, timed_out=False, interrupted=False, wall_s=10.0, sampler=SamplerStats(), log_tail="")
    return Outcome(**(base | kw))


def test_steady_state_excludes_the_first_steps():
    ev = events()
    ev[0]["step_time_s"] = 100.0  # a slow first step must not count
    m = steady_state(ev, skip_steps=2, samples_per_step=4)
    assert m["steady_steps"] == 4
    assert m["tokens_per_s"] == 200.0
    assert m["trainable_tokens_per_s"] == 100.0
    assert m["samples_per_s"] == 8.0


def test_steady_state_is_empty_without_steady_steps():
    assert steady_state(events(2), skip_steps=2, samples_per_step=1) == {}


def test_loss_metrics_take_first_and_last_step():
    assert loss_metrics(events(3)) == {"steps": 3, "first_loss": 4.9, "final_loss": 4.7}


def test_worker_that_died_without_result_is_failed_with_signal():
    status, reason = status_of(None, outcome(returncode=-9))
    assert status == "failed" and "killed by signal 9" in reason


def test_timeout_wins_over_worker_report():
    assert status_of({"status": "ok"}, outcome(timed_out=True))[0] == "timeout"


def test_skipped_worker_keeps_its_reason():
    assert status_of({"status": "skipped", "reason": "needs a GPU"}, outcome()) == ("skipped", "needs a GPU")


def test_summaries_are_written_atomically_and_loaded_in_run_order(tmp_path: Path):
    for i in (10, 2, 1):
        run = tmp_path / f"{i}-trl"
        run.mkdir()
        results.write_json_atomic(run / results.SUMMARY, {"run": run.name, "status": "ok", "metrics": {}})
    (tmp_path / "3-trl").mkdir()  # unfinished: no summary
    assert [s["run"] for s in load_summaries(tmp_path)] == ["1-trl", "2-trl", "10-trl"]
    assert not list(tmp_path.glob("*/.*.tmp"))


def test_sweep_table_has_a_row_per_run():
    rows = [
        {"run": "0-trl", "framework": "trl", "status": "ok", "metrics": {"tokens_per_s": 1.0}},
        {"run": "1-trl", "framework": "trl", "status": "failed", "reason": "boom", "metrics": {}},
    ]
    assert sweep_table(rows).row_count == 2


def run(name, framework, sha="abc", first_loss=6.0, overrides=(), status="ok"):
    fp = {"examples": 10, "dataset_tokens": 100, "dataset_trainable_tokens": 40, "first_batches_sha256": sha}
    return {
        "run": name,
        "framework": framework,
        "status": status,
        "fingerprint": fp,
        "overrides": [f"framework={framework}", *overrides],
        "metrics": {"first_loss": first_loss},
    }


def test_parity_compares_each_run_with_the_first_run_of_the_same_job():
    from bench.summary import parity

    runs = [
        run("0", "trl"),
        run("1", "llamafactory", first_loss=6.0 * (1 + 5e-6)),
        run("2", "trl", overrides=["train.lr=1"], sha="zzz"),
        run("3", "llamafactory", overrides=["train.lr=1"]),
    ]
    p = parity(runs)
    assert p[0]["reference"] == "0" and p[1]["reference"] == "0"
    assert p[1]["same_tokens"] and p[1]["same_start"]
    assert p[2]["reference"] == "2"  # another job: its own reference
    assert not p[3]["same_tokens"]


def test_parity_flags_a_step1_loss_beyond_tolerance():
    from bench.summary import parity

    p = parity([run("0", "trl"), run("1", "llamafactory", first_loss=6.001)])
    assert not p[1]["same_start"] and p[1]["step1_loss_rel_diff"] > 1e-5


def test_parity_skips_runs_that_did_not_finish():
    from bench.summary import parity

    assert parity([run("0", "unsloth", status="skipped"), run("1", "trl")])[0] == {}
