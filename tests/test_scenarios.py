"""Scenarios (conf/scenario/): presets of a published load, composed over the defaults, under the command line."""

import re
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from bench.core.config import validate
from bench.sweep.app import job_spec
from tests.conftest import REPO

CONF = str(REPO / "conf")
SCENARIOS = sorted(p.stem for p in (REPO / "conf" / "scenario").glob("*.yaml"))


def cfg(*overrides: str, config_name: str = "config"):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def test_no_scenario_by_default():
    assert cfg().train.batch_size == 4 and cfg().model.name == "tiny"


def test_the_published_loads_are_there():
    assert SCENARIOS == ["llamafactory-wiki", "long-context", "seed-0.5b", "seed-7b-24gb", "seed-llamafactory",
                         "seed-trl", "seed-unsloth", "unsloth-published"]  # fmt: skip


VALUE = re.compile(r"^\s*(- )?[^#\s][^#]*?:\s+\S|^\s*- \{")  # a line that sets a value (a key's, or a list item's)
COMMENT = re.compile(r"\s{2,}#\s+(.+)$")  # its comment: after two spaces, so a quoted '### Question' is no comment
CITED = re.compile(r"not stated in the source|yaml:\d+|cell \d+|\.sh:\d+|\.md|\.ipynb|\[#?\w+\]|line \d+|itself|docs")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_value_a_scenario_sets_names_its_source(scenario):
    """Each value cites the line of the source it comes from, or says that the source does not state it."""
    lines = (REPO / "conf" / "scenario" / f"{scenario}.yaml").read_text().splitlines()
    setting = [line for line in lines if VALUE.match(line) and not line.lstrip().startswith("#")]
    assert setting
    uncited = [line for line in setting if not ((m := COMMENT.search(line)) and CITED.search(m.group(1)))]
    assert not uncited, f"conf/scenario/{scenario}.yaml: values without a source: {uncited}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_validates_and_cites_its_source(tmp_path, scenario):
    text = (REPO / "conf" / "scenario" / f"{scenario}.yaml").read_text()
    assert text.startswith("# @package _global_\n# ")  # a comment saying where its settings come from
    job_spec(validate(cfg(f"scenario={scenario}", f"cache_dir={tmp_path}")), tmp_path / "run")


def test_a_scenario_wins_over_the_defaults():
    t = cfg("scenario=unsloth-published").train
    assert (t.quant, t.batch_size, t.grad_accum, t.max_seq_len, t.lora.r) == ("4bit", 2, 4, 2048, 32)
    assert len(t.lora.target_modules) == 7


def test_the_command_line_wins_over_the_scenario():
    c = cfg("scenario=unsloth-published", "train.batch_size=8", "train.quant=none")
    assert (c.train.batch_size, c.train.quant, c.train.grad_accum) == (8, "none", 4)


def test_a_model_on_the_command_line_wins_over_the_scenarios_model():
    assert cfg("scenario=unsloth-published").model.name == "qwen2.5-7b-arch"
    assert cfg("scenario=unsloth-published", "model=qwen2.5-0.5b-arch").model.name == "qwen2.5-0.5b-arch"


def test_the_seed_tutorials_job_at_both_sizes():
    small, large = cfg("scenario=seed-0.5b"), cfg("scenario=seed-7b-24gb")
    assert (small.model.name, small.train.quant, small.train.vram_budget_gb) == ("qwen2.5-0.5b-arch", "none", None)
    assert (large.model.name, large.train.quant, large.train.vram_budget_gb) == ("qwen2.5-7b-arch", "4bit", 24)
    for t in (small.train, large.train):
        assert (t.batch_size, t.grad_accum, t.max_seq_len, t.lr, t.lora.r, t.lora.alpha) == (2, 8, 2048, 5e-5, 8, 16)


def test_long_context_fills_every_row_to_8192_tokens():
    c = cfg("scenario=long-context")
    rows = (c.dataset.tokenize, c.dataset.fill_to, c.train.max_seq_len, c.train.packing)
    assert rows == ("harness", 8192, 8192, "none")


def test_a_scenario_is_not_part_of_the_job_key(tmp_path):
    """The key covers the values; the same values reached by hand are the same job."""
    by_name = job_spec(validate(cfg("scenario=llamafactory-wiki", f"cache_dir={tmp_path}")), tmp_path)
    by_hand = cfg(
        "model=qwen2.5-7b-arch",
        "train.batch_size=4",
        "train.grad_accum=2",
        "train.max_seq_len=1024",
        "train.lr=1e-4",
        "train.lora.r=8",
        "train.lora.alpha=16",
        "train.gradient_checkpointing=true",
        f"cache_dir={tmp_path}",
    )
    assert job_spec(validate(by_hand), tmp_path).job_key() == by_name.job_key()


@pytest.mark.parametrize("framework", ["trl", "unsloth", "llamafactory"])
def test_a_scenario_composes_with_every_framework(tmp_path, framework):
    c = cfg("scenario=unsloth-published", f"framework={framework}", "model=qwen2.5-7b-arch", f"cache_dir={tmp_path}")
    assert job_spec(validate(c), tmp_path).framework == framework


def test_a_scenario_reaches_the_memory_frontier():
    c = cfg("scenario=seed-7b-24gb", "frontier.vram_budget_gb=24", config_name="frontier")
    assert (c.model.name, c.train.quant, validate(c).frontier.vram_budget_gb) == ("qwen2.5-7b-arch", "4bit", 24)


def test_the_report_header_names_the_scenario():
    from bench.analysis.report import report_title

    runs = pd.DataFrame({"scenario": ["seed-0.5b", "seed-0.5b", None]})
    assert report_title(REPO / "s1", runs) == "sftbench report: s1 (scenario: seed-0.5b)"
    assert report_title(REPO / "s1", pd.DataFrame({"scenario": [None]})) == "sftbench report: s1"


def test_an_unknown_scenario_is_rejected_naming_the_choices():
    with pytest.raises(MissingConfigException, match="scenario/nope"):
        cfg("scenario=nope")


def test_an_unknown_scenario_stops_bench_run_before_any_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.run", "scenario=nope", f"results_dir={tmp_path}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    (line,) = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]  # one line, naming the choices
    assert line.startswith("error: scenario=nope: no such scenario") and "unsloth-published" in line
    assert not list(tmp_path.iterdir())  # rejected before any run: no sweep directory


def test_an_unknown_choice_of_any_group_is_one_line_but_sweeps_and_test_doubles_pass():
    from bench.sweep.app import unknown_choice

    assert unknown_choice(["model=tiny,nope"]).startswith("model=nope: no such model; choose from ")
    assert unknown_choice(["framework=trl,llamafactory", "train.lr=1e-4", "hydra/launcher=slurm"]) is None
    assert unknown_choice(["framework=misbehave"]) is not None
    assert unknown_choice([f"hydra.searchpath=[file://{REPO}/tests/conf]", "framework=misbehave"]) is None
