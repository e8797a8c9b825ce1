"""The seed tutorial's three runs replayed as published, then as one job, on a CPU: the published runs say
what they left out, Unsloth is skipped with its reason, and the report of both sweeps says how much of the
published difference was the framework."""

import json

import pytest

from bench.core import results
from tests.conftest import readme_commands, run_dirs, run_readme

pytestmark = pytest.mark.integration
SMALL = ("model=tiny", "dataset.max_rows=32", "eval.prompts=2")  # 32 rows: a few steps per epoch


SCENARIOS = [
    "python -m bench.run scenario=seed-llamafactory,seed-trl,seed-unsloth",
    "python -m bench.run scenario=seed-0.5b framework=trl,llamafactory,unsloth,axolotl",
    "python -m bench.report results/<published sweep> results/<one-job sweep>",
]


def test_the_readme_block_of_scenarios_is_the_one_run_here():
    assert [command for command, _ in readme_commands("**Scenarios.**")] == SCENARIOS


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The README's scenario commands as written, on a small sample."""
    published, one_job = tmp_path_factory.mktemp("published"), tmp_path_factory.mktemp("one_job")
    a = run_readme(SCENARIOS[0], *SMALL, f"results_dir={published}")
    b = run_readme(SCENARIOS[1], *SMALL, f"results_dir={one_job}")
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-3000:] + b.stderr[-3000:]
    return published, one_job, a


def summaries(tmp) -> dict[str, dict]:
    return {s["framework"]: s for s in (json.loads((r / results.SUMMARY).read_text()) for r in run_dirs(tmp))}


def test_the_published_runs_are_one_run_per_scenario_with_its_framework(sweeps):
    runs = summaries(sweeps[0])
    assert {f: s["scenario"] for f, s in runs.items()} == {
        "llamafactory": "seed-llamafactory", "trl": "seed-trl", "unsloth": "seed-unsloth"}  # fmt: skip
    assert runs["unsloth"]["status"] == "skipped" and "GPU" in runs["unsloth"]["reason"]
    assert runs["trl"]["status"] == runs["llamafactory"]["status"] == "ok"
    assert len({s["job_key"] for s in runs.values()}) == 3  # three different jobs, as published


def test_a_published_run_on_a_cpu_says_what_it_left_out(sweeps):
    lf = summaries(sweeps[0])["llamafactory"]
    assert lf["published"]["as_published"] is False
    left_out = " | ".join(lf["published"]["left_out"])
    for text in ("train.quant: published 4bit, here none (no GPU on this host)",
                 "train.precision: published bf16, here fp32 (no GPU on this host)",
                 "here random weights of its architecture (tiny) (a stand-in)",
                 "framework.version: published 0.9.3.dev0, here 0.9.5 (another release)",
                 "data: published the first 1,000 rows of train_zh_0.json, here 32 bundled rows",
                 "hardware: published NVIDIA GeForce RTX 4070 Laptop GPU, 8 GB, here a CPU"):  # fmt: skip
        assert text in left_out, left_out
    spec = json.loads((run_dirs(sweeps[0])[0] / results.SPEC).read_text())
    assert spec["train"]["quant"] == "none" and spec["train"]["epochs"] == 3  # what ran: 3 epochs, unquantised
    assert lf["effective"]["max_steps"] == 6  # ceil(3 x 32 / (2 x 8))


def test_the_trl_run_trains_its_plain_format_on_the_answer_after_the_response_template(sweeps):
    trl = summaries(sweeps[0])["trl"]
    assert trl["effective"]["max_steps"] == 32  # one epoch of 32 rows at batch 1
    assert any("harness's token ids" in n for n in trl["notes"])  # TRL would append EOS; the notebook has none


def test_the_report_of_both_sweeps_says_what_the_difference_was_made_of(sweeps):
    published, one_job, _ = sweeps
    sweep_a, sweep_b = (next(p for p in d.iterdir() if p.is_dir()) for d in (published, one_job))
    proc = run_readme(SCENARIOS[2], paths={"published sweep": sweep_a, "one-job sweep": sweep_b})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (sweep_a / "report.md").read_text()
    assert "What the difference was made of" in report, report
    section = report.split("## What the difference was made of", 1)[1].split("\n## ", 1)[0]
    sentence = section[section.index("Of the published runs'") :].split(". ", 1)[0]
    assert "time per epoch difference (llamafactory vs trl)" in sentence, sentence
    assert "the same job shows" in sentence and "one run each, no CI" in sentence, sentence
    rest = sentence.split("the rest is the job", 1)[1]
    for differing in ("prompt format", "sequence length", "optimizer", "LoRA", "batch", "length of training"):
        assert differing in rest, sentence
    assert "unsloth" in section and "skipped" in section  # its published run could not run here: said, no ratio
    assert "not as published" in report
