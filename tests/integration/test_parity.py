"""Every framework that should match TRL on the default job does: both finish, same data fingerprint, same
tokens at every step, same loss at step 1 and along the curve after it.

One sweep of every registered framework (the README's main command, tests/integration/conftest.py's main_job),
shared by all the assertions. Which frameworks should match is
declared once, here; every framework registered in conf/framework/ is either in PARITY or excluded with its
reason, so a new framework cannot be forgotten. Each framework's own behaviour (truncation, its failures, the
jobs it cannot run) is tested beside it, in test_<framework>.py.
"""

import json
import re

import pytest

from bench.core import config, results
from tests.conftest import REPO, run_dirs

REFERENCE = "trl"
PARITY = ("llamafactory", "axolotl")  # should match the reference on the default job, on any host
EXCLUDED = {
    REFERENCE: "the reference the others are compared with",
    "unsloth": "needs a GPU (needs_gpu: true); on a CPU host its runs are skipped (test_unsloth.py)",
}
integration = pytest.mark.integration


def test_every_registered_framework_is_checked_for_parity_or_excluded_with_a_reason():
    registered = set(config.frameworks())
    assert registered == {*PARITY, *EXCLUDED}, f"add {registered - {*PARITY, *EXCLUDED}} to PARITY or EXCLUDED"
    assert not set(PARITY) & set(EXCLUDED) and all(EXCLUDED.values())


def summaries(tmp_path):
    return {s["framework"]: s for s in (json.loads((r / results.SUMMARY).read_text()) for r in run_dirs(tmp_path))}


@pytest.fixture(scope="module")
def sweep(main_job):
    # Held-out evaluation is not what parity compares (and the slowest part of these runs): left out. The rows
    # are a seeded sample of the bundled ones (bench.sweep.selection): every framework trains on that selection.
    return main_job


@integration
def test_every_run_trained_on_one_selection_named_in_its_summary_and_the_runs_table(sweep):
    import pandas as pd

    tmp, _ = sweep
    runs = {f: s for f, s in summaries(tmp).items() if s["status"] == "ok"}
    assert set(runs) == {REFERENCE, *PARITY}
    (selected,) = {s["data"]["selection_sha256"] for s in runs.values()}
    assert all((s["data"]["rows"], s["data"]["kept"]) == (240, 120) for s in runs.values())
    (table,) = tmp.glob("*/runs.csv")
    table = pd.read_csv(table)
    assert set(table[table["status"] == "ok"]["job.dataset.selection_sha256"]) == {selected}


@integration
@pytest.mark.parametrize("framework", PARITY)
def test_both_frameworks_finish(sweep, framework):
    tmp, proc = sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = summaries(tmp)
    assert set(runs) == set(config.frameworks()), runs  # every registered framework ran or was skipped
    pair = {f: runs[f]["status"] for f in (REFERENCE, framework)}
    assert pair == {REFERENCE: "ok", framework: "ok"}, {f: runs[f].get("reason") for f in pair}
    assert runs[framework]["versions"][config.frameworks()[framework]["distribution"]]


@integration
@pytest.mark.parametrize("framework", PARITY)
def test_fingerprints_are_equal(sweep, framework):
    runs = summaries(sweep[0])
    ref, other = runs[REFERENCE]["fingerprint"], runs[framework]["fingerprint"]
    assert ref["batches_hashed"] == other["batches_hashed"] > 0
    assert ref == other


@integration
@pytest.mark.parametrize("framework", PARITY)
def test_step1_losses_agree(sweep, framework):
    runs = summaries(sweep[0])
    a, b = runs[REFERENCE]["metrics"]["first_loss"], runs[framework]["metrics"]["first_loss"]
    assert abs(a - b) / abs(a) < 1e-5


@integration
@pytest.mark.parametrize("framework", PARITY)
def test_both_ran_one_job_and_their_loss_curves_agree(sweep, framework):
    """The curve after the first real update agrees too: both seed the LoRA initialisation the same way."""
    from bench.analysis.assess import parity
    from bench.core.record import load_sweep

    (sweep_dir,) = (p for p in sweep[0].iterdir() if p.is_dir())
    by = {r.summary.framework: r for r in load_sweep(sweep_dir)[0]}
    runs = [by[REFERENCE], by[framework]]
    assert runs[0].summary.job_key == runs[1].summary.job_key and runs[0].summary.framework != runs[1].summary.framework
    check = parity(runs)[1]
    assert check["same_curve"] and check["curve_steps"], check


@integration
@pytest.mark.parametrize("framework", PARITY)
def test_every_step_saw_the_same_tokens(sweep, framework):
    events = {f: results.read_jsonl(r / results.EVENTS) for r in run_dirs(sweep[0])
              if (f := r.name.split("-", 1)[1]) in (REFERENCE, framework)}  # fmt: skip
    key = [(e["tokens"], e["trainable_tokens"]) for e in events[REFERENCE]]
    assert key == [(e["tokens"], e["trainable_tokens"]) for e in events[framework]]
    assert len(key) == 8


@integration
def test_the_table_marks_every_framework_as_the_same_job(sweep):
    assert " ref" in sweep[1].stdout and " =" in sweep[1].stdout and "≠" not in sweep[1].stdout


def layout_entries() -> dict[str, str]:
    """docs/results-layout.md's tree of a sweep: each entry's name(s) -> the entry's text."""
    block = (REPO / "docs/results-layout.md").read_text(encoding="utf-8").split("```")[1]
    entries, current = {}, None
    for line in block.splitlines():
        head, text = line[:42].strip(), line[42:].strip()
        if head:
            current = head.split()[0] if "," not in head else head
            entries[current] = text
        elif current:
            entries[current] += " " + text
    return {name.strip(): text for names, text in entries.items() for name in names.split(",")}


@integration
def test_every_file_and_field_of_a_run_directory_is_in_the_results_layout(sweep):
    entries = layout_entries()
    for run in run_dirs(sweep[0]):
        names = {p.name + ("/" if p.is_dir() else "") for p in run.iterdir()}
        assert names <= set(entries), f"{run.name}: not in docs/results-layout.md: {names - set(entries)}"
        for file in (results.EVENTS, results.SAMPLES):
            fields = {k for row in results.read_jsonl(run / file) for k in row}
            words = set(re.findall(r"[a-z_0-9]+", entries[file]))
            assert fields <= words, f"{file} fields not in docs/results-layout.md: {fields - words}"
