"""The findings block (bench.analysis.findings): one line per system against the baseline system on each job, every
number and reason checked against runs.csv; parity findings; systems by name; and a sweep with nothing to
compare. Fake sweeps, no training."""

import json
import math
import re
import statistics

import pandas as pd
import pytest
from scipy import stats

from bench.analysis import findings, report, runs
from bench.core import results
from tests.conftest import as_summary

TORCH_CPU, TORCH_CUDA = "2.13.0+cpu", "2.14.1"


def write_run(sweep, name, framework, *, version="1.16.0", status="ok", reason="", job_key="same", seed=1,
              fingerprint="fp", metrics=None, quality=None, torch=TORCH_CPU, cuda=None, overrides=None):  # fmt: skip
    """A run directory as bench.run leaves it: summary.json (the worker's view of a CPU run)."""
    (sweep / name).mkdir(parents=True)
    ok = status == "ok"
    summary = {"run": name, "framework": framework, "system": framework, "framework_version": version if ok else None,
               "framework_version_requested": version, "status": status, "reason": reason, "job_key": job_key,
               "seed": seed, "overrides": overrides or [f"framework={framework}", "results_dir=/tmp/r"],
               "versions": {"torch": torch} if ok else {}, "hardware": {"gpus": [], "cuda": cuda} if ok else {},
               "fingerprint": {"first_batches_sha256": fingerprint} if ok else {},
               "metrics": metrics or {}, "quality": quality or {}}  # fmt: skip
    results.write_json_atomic(sweep / name / results.SUMMARY, summary)


def measured(tps, rss, loss, **extra):
    return {"metrics": {"tokens_per_s": tps, "peak_rss_mb": rss, **extra}, "quality": {"heldout_loss": loss}}


@pytest.fixture
def sweep(tmp_path):
    """TRL and LLaMA-Factory on six jobs, each showing one way a finding can go; Unsloth skipped on one."""
    d = tmp_path / "sweep"
    runs = [
        # same job, three seeds, same tokens: ratios with a 95 % CI
        *[("trl", dict(job_key="same", seed=s, **measured(tps, 600.0 + s, 2.0))) for s, tps in
          [(1, 100.0), (2, 104.0), (3, 98.0)]],
        *[("llamafactory", dict(job_key="same", seed=s, **measured(tps, 1000.0 + 3 * s, 2.0 + 0.01 * s))) for s, tps in
          [(1, 130.0), (2, 126.0), (3, 135.0)]],
        # different tokens: no ratio
        ("trl", dict(job_key="tokens", fingerprint="aaa", **measured(100.0, 600.0, 2.0))),
        ("llamafactory", dict(job_key="tokens", fingerprint="bbb", **measured(150.0, 900.0, 2.0))),
        # one run each: no CI
        ("trl", dict(job_key="single", **measured(100.0, 600.0, 2.0))),
        ("llamafactory", dict(job_key="single", **measured(250.0, 1200.0, 2.0))),
        # the candidate's machine was shared while it trained
        ("trl", dict(job_key="shared", **measured(100.0, 600.0, 2.0, other_cpu_cores=0.02))),
        ("llamafactory", dict(job_key="shared", **measured(70.0, 900.0, 2.0, other_cpu_cores=1.25, load_avg_1m=2.8))),
        # different torch builds
        ("trl", dict(job_key="torch", **measured(100.0, 600.0, 2.0))),
        ("llamafactory", dict(job_key="torch", torch=TORCH_CUDA, cuda="13.0", **measured(140.0, 900.0, 2.0))),
        # a skipped run
        ("trl", dict(job_key="skipped", **measured(100.0, 600.0, 2.0))),
        ("unsloth", dict(job_key="skipped", version="2026.10.9", status="skipped",
                         reason="unsloth requires an NVIDIA/AMD/Intel GPU; none found on this host")),
    ]  # fmt: skip
    for i, (framework, kwargs) in enumerate(runs):
        write_run(d, f"{i}-{framework}", framework, **kwargs)
    report.build(d)
    return d


def finding_lines(sweep) -> list[str]:
    md = (sweep / "report.md").read_text()
    section = md.split("## Findings\n", 1)[1].split("\n## ", 1)[0]
    return [line[2:] for line in section.splitlines() if line.startswith("- ")]


HEAD = re.compile(r"^(?P<system>.+?) vs (?P<base>.+?), same job (?P<job>\S+?)(, |: )")


def expected_ratio(runs: pd.DataFrame, job: str, system: str, base: str, metric: str) -> tuple[float, ...]:
    """From runs.csv alone: the geometric mean of the per-seed ratio over ok pairs on the same tokens and its
    95 % CI (Student's t on the log ratios)."""
    ok = runs[(runs["status"] == "ok") & (runs["job_key"] == job)]
    mine = ok[ok["system"] == system]
    theirs = ok[ok["system"] == base].drop_duplicates("seed")
    pairs = mine.merge(theirs, on="seed", suffixes=("", "_base"))
    pairs = pairs[pairs["fingerprint"] == pairs["fingerprint_base"]]
    logs = [math.log(r) for r in pairs[metric] / pairs[f"{metric}_base"]]
    n = len(logs)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(logs) / math.sqrt(n) if n > 1 else math.nan
    mean = statistics.fmean(logs)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half), n


def sig3(value: float) -> str:
    return f"{value:#.3g}".rstrip(".")


def check_against_runs_csv(line: str, runs: pd.DataFrame) -> None:
    """One finding line's ratios, intervals and reasons, each recomputed from runs.csv."""
    head = HEAD.match(line)
    assert head, line
    job = next(k for k in runs["job_key"].unique() if k.startswith(head["job"]))
    of_job = runs[runs["job_key"] == job]
    mine, theirs = (of_job[of_job["system"] == s] for s in (head["system"], head["base"]))
    assert not mine.empty and not theirs.empty, line
    if (mine["status"] != "ok").all():
        assert f"no ratio — {mine['status'].iloc[0]}: {mine['reason'].iloc[0]}." in line
        return
    fingerprints = set(mine["fingerprint"]), set(theirs["fingerprint"])
    if fingerprints[0].isdisjoint(fingerprints[1]):
        assert "no ratio — trained on different tokens" in line and min(fingerprints[0]) in line
        return
    for metric, name in [("tokens_per_s", "tokens/s"), ("peak_rss_mb", "peak RSS")]:
        mean, low, high, n = expected_ratio(runs, job, head["system"], head["base"], metric)
        if n == 1:
            assert f"{name} {sig3(mean)}x" in line and "one run each (no CI)" in line, line
        else:
            assert f"{name} {sig3(mean)}x (95 % CI {sig3(low)}–{sig3(high)})" in line, line
            assert f"{n} seed pairs" in line and "no CI" not in line, line
    shared = of_job[of_job["shared_machine"].notna()]
    assert ("the machine was shared during training" in line) == (not shared.empty), line
    for text in shared["shared_machine"]:
        assert text.split(": ", 1)[1] in line
    builds = set(mine["torch_build"]), set(theirs["torch_build"])
    assert ("different torch builds" in line) == (builds[0] != builds[1]), line


def test_every_finding_line_matches_the_numbers_in_runs_csv(sweep):
    runs = pd.read_csv(sweep / "runs.csv", dtype={"job_key": str, "fingerprint": str})
    lines = finding_lines(sweep)
    assert len(lines) == 6
    for line in lines:
        check_against_runs_csv(line, runs)


def line_of(sweep, job: str) -> str:
    return next(line for line in finding_lines(sweep) if f"same job {job}" in line)


def test_one_job_with_seeds_gives_ratios_with_their_interval_and_says_the_loss_is_equal(sweep):
    line = line_of(sweep, "same")
    assert line.startswith("llamafactory 1.16.0 vs trl 1.16.0, same job same, same tokens, 3 seed pairs: tokens/s")
    assert "held-out loss equal (" in line and "the difference is inside its CI" in line


def test_each_reason_is_said_where_the_ratio_would_be(sweep):
    assert "no ratio — trained on different tokens (data fingerprint bbb vs aaa)" in line_of(sweep, "tokens")
    assert "one run each (no CI): tokens/s 2.50x, peak RSS 2.00x, held-out loss 1.00x (2 vs 2)" in line_of(
        sweep, "single")  # fmt: skip
    assert ("Caution: the machine was shared during training — llamafactory 1.16.0: other processes used 1.25 cores "
            "(load average 2.8) — so tokens/s is not the frameworks' alone") in line_of(sweep, "shared")  # fmt: skip
    assert ("different torch builds (2.14.1 cuda 13.0 vs 2.13.0+cpu cpu-only), so part of the speed difference is "
            "torch's") in line_of(sweep, "torch")  # fmt: skip
    skipped = "unsloth requires an NVIDIA/AMD/Intel GPU; none found on this host"
    head = "unsloth 2026.10.9 vs trl 1.16.0, same job skipped"
    assert line_of(sweep, "skipped") == f"{head}: no ratio — skipped: {skipped}."


def test_the_findings_open_the_report_and_the_tables_carry_the_same_ratio(sweep):
    md = (sweep / "report.md").read_text()
    assert md.split("\n## ", 1)[1].startswith("Findings\n")
    frame = pd.read_csv(sweep / "runs.csv", dtype={"job_key": str})
    mean, low, high, _ = expected_ratio(frame, "same", "llamafactory 1.16.0", "trl 1.16.0", "tokens_per_s")
    speed = md.split("## Speed\n", 1)[1].split("\n## ", 1)[0]
    assert f"{sig3(mean)}x [{sig3(low)}, {sig3(high)}]" in speed


def write_curve(sweep, run, losses):
    results.write_jsonl(sweep / run / results.EVENTS, [
        {"step": i, "loss": v, "lr": 1e-4, "tokens": 10, "trainable_tokens": 5, "len_sq": 100, "step_time_s": 0.1,
         "time": 1000.0 + i} for i, v in enumerate(losses, start=1)])  # fmt: skip


def test_a_loss_curve_apart_beyond_its_tolerance_is_a_finding(tmp_path):
    """Two releases of TRL on one job: same tokens, the curve 1.2 % apart after the first update."""
    d = tmp_path / "releases"
    for i, version in enumerate(["0.24.0", "1.16.0"]):
        write_run(d, f"{i}-trl", "trl", version=version, **measured(100.0 + i, 600.0, 2.0),
                  overrides=["framework=trl", f"framework.version={version}"])  # fmt: skip
    write_curve(d, "0-trl", [3.0, 2.5, 2.4, 2.3, 2.2, 2.1, 2.0])
    write_curve(d, "1-trl", [3.0, 2.5 * 1.012, 2.4, 2.3, 2.2, 2.1, 2.0])
    frame, _ = runs.load_runs(d)
    lines = findings.lines(frame, findings.comparisons(frame, "trl"))
    assert lines[0].startswith("trl 1.16.0 vs trl 0.24.0, same job same, same tokens, one run each (no CI)")
    assert lines[1] == ("Parity: trl 1.16.0 vs trl 0.24.0, same job same, same tokens: loss curve 1.2 % apart over "
                        "steps 2-6 (tolerance 0.1 %) — they did not train identically, so their ratios compare "
                        "different training.")  # fmt: skip


def test_systems_are_named_by_framework_version_and_the_setting_the_sweep_varies():
    summaries = [
        {"system": "trl", "framework_version": "1.16.0",
         "overrides": ["framework=trl", "train.lr=1e-4", "train.seed=1", "framework.env.HF_TOKEN=secret"]},
        {"system": "trl+liger", "framework_version": "1.16.0",
         "overrides": ["framework=trl", "train.lr=2e-4", "train.seed=2", "train.kernels=liger"]},
        {"system": "unsloth", "framework_version": None, "framework_version_requested": "2026.10.9",
         "overrides": ["framework=unsloth", "train.lr=2e-4", "train.seed=1"]},
        {"system": "trl", "framework_version": "1.16.0"},  # an older harness recorded no overrides
    ]  # fmt: skip
    names = runs.system_names([as_summary(s) for s in summaries])
    assert names == ["trl 1.16.0 lr=1e-4", "trl+liger 1.16.0 lr=2e-4", "unsloth 2026.10.9 lr=2e-4", "trl 1.16.0"]


def test_a_release_sweep_holds_the_later_release_against_the_first_with_numbers_only(tmp_path):
    d = tmp_path / "releases"
    for i, (version, vram) in enumerate([("0.24.0", 8000.0), ("1.16.0", 7200.0)]):
        write_run(d, f"{i}-trl", "trl", version=version, metrics={"tokens_per_s": 100.0, "peak_vram_mb": vram},
                  overrides=["framework=trl", f"framework.version={version}"])  # fmt: skip
    memory = report.compose(d).content
    table = next(t for h, _, t in memory if h == "Memory").set_index("system")
    assert table.loc["trl 1.16.0", "VRAM vs trl 0.24.0"] == "0.900x (1 run)"
    assert table.loc["trl 0.24.0 (baseline)", "VRAM vs trl 0.24.0"] == "1x"


def test_labels_add_the_seed_only_where_a_system_ran_several():
    frame = pd.DataFrame({"run": ["0-trl", "1-trl", "2-llamafactory"], "job_key": ["j"] * 3, "seed": [1, 2, 1],
                          "system": ["trl 1.16.0", "trl 1.16.0", "llamafactory 0.9.5"]})  # fmt: skip
    assert list(findings.run_labels(frame)) == ["trl 1.16.0 seed 1", "trl 1.16.0 seed 2", "llamafactory 0.9.5"]


# A sweep with nothing to compare: said in the findings, exit 0; a path that is no sweep: one line, exit 2


def findings_of(sweep) -> list[str]:
    assert report.main([str(sweep)]) == 0
    return finding_lines(sweep)


def test_a_sweep_with_no_runs_says_so(tmp_path):
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    assert findings_of(tmp_path) == [findings.NO_RUNS]


def test_a_sweep_of_one_system_has_nothing_to_compare_and_says_what_it_measured(tmp_path):
    write_run(tmp_path, "0-trl", "trl", **measured(522.1, 653.3, 8.194))
    assert findings_of(tmp_path) == ["Only trl 1.16.0 ran job same (1 run ok): nothing to compare it with; "
                                     "tokens/s 522.1, peak RSS 653.3 MiB, held-out loss 8.194."]  # fmt: skip


def test_a_sweep_of_failed_runs_only_says_no_run_finished_ok_and_why(tmp_path):
    write_run(tmp_path, "0-trl", "trl", status="failed", reason="RuntimeError: the framework broke")
    write_run(tmp_path, "1-unsloth", "unsloth", status="skipped", reason="no GPU")
    assert findings_of(tmp_path) == [
        findings.NO_OK_RUN,
        "trl 1.16.0, job same: failed: RuntimeError: the framework broke; nothing measured.",
        "unsloth 1.16.0, job same: skipped: no GPU; nothing measured.",
    ]


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: (p / "file.txt", p.joinpath("file.txt").write_text(
    "x"))[0], lambda p: (p / "src", (p / "src" / "pkg").mkdir(parents=True), (p / "src" / "a.py").write_text(""))[0]],
    ids=["missing", "a file", "a directory of other things"])  # fmt: skip
def test_a_path_that_is_no_sweep_is_one_line_and_exit_2(tmp_path, capsys, make):
    path = make(tmp_path)
    assert report.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: not a sweep directory") and err.count("\n") == 1
    assert not (tmp_path / "src" / "report.md").exists()


def test_notes_that_qualify_the_numbers_reach_the_findings_the_report_and_the_runs_table(tmp_path):
    """On data whose held-out split is mostly training rows, a run's summary says quality is recall: the reader
    sees it in Findings (first among the notes), in the report's run notes and in runs.csv."""
    d = tmp_path / "sweep"
    recall = "quality is recall: 27 of 36 held-out rows are also training rows"
    eos = "trl does not append the EOS token in this format"
    write_run(d, "0-trl", "trl", **measured(100.0, 600.0, 2.0))
    write_run(d, "1-llamafactory", "llamafactory", **measured(120.0, 900.0, 2.0))
    for name, notes in (("0-trl", [eos, recall]), ("1-llamafactory", [recall])):
        path = d / name / results.SUMMARY
        results.write_json_atomic(path, json.loads(path.read_text()) | {"notes": notes})
    report.build(d)
    notes = [line for line in finding_lines(d) if line.startswith("Notes on")]
    assert notes == [f"Notes on trl 1.16.0, job same: {recall}; {eos}.",
                     f"Notes on llamafactory 1.16.0, job same: {recall}."]  # fmt: skip
    md = (d / "report.md").read_text()
    assert "## Run notes" in md and recall in md.split("## Run notes", 1)[1]
    table = pd.read_csv(d / "runs.csv", keep_default_na=False)
    assert list(table["notes"]) == [f"{eos}{runs.NOTE_SEP}{recall}", recall]


def test_text_a_spreadsheet_would_run_is_neutralised_in_runs_csv_and_numbers_are_not(tmp_path):
    d = tmp_path / "sweep"
    write_run(d, "0-trl", "trl", reason="", **measured(100.0, 600.0, 2.0))
    write_run(d, "1-llamafactory", "llamafactory", status="failed", reason='=HYPERLINK("http://x","y")')
    write_run(d, "2-axolotl", "axolotl", status="failed", reason="-2+3", **measured(-1.5, 600.0, 2.0))
    report.build(d)
    table = pd.read_csv(d / "runs.csv", keep_default_na=False, dtype=str)
    assert list(table["reason"]) == ["", "'=HYPERLINK(\"http://x\",\"y\")", "'-2+3"]
    assert table.loc[2, "tokens_per_s"] == "-1.5"  # a number stays a number
    assert pd.read_parquet(d / "runs.parquet")["reason"][1] == '=HYPERLINK("http://x","y")'  # parquet keeps it


def test_markdown_shows_what_the_report_did_not_write_as_text(tmp_path):
    d = tmp_path / "<img src=x onerror=alert(1)>"
    write_run(d, "0-trl", "trl", **measured(100.0, 600.0, 2.0))
    write_run(d, "1-llamafactory", "llamafactory", status="failed", reason="<script>x</script>")
    report.build(d)
    md = (d / "report.md").read_text()
    assert "<img" not in md and "<script>" not in md
    assert "&lt;img src=x onerror=alert(1)&gt;" in md and "&lt;script&gt;x&lt;/script&gt;" in md


def test_a_ratio_is_a_geometric_mean_whose_interval_stays_positive_over_noisy_pairs():
    """Three pairs on a busy machine: an arithmetic interval around 1.77x would reach below zero."""
    noisy = findings.Ratio([0.9, 2.9, 1.5])
    assert noisy.mean == pytest.approx((0.9 * 2.9 * 1.5) ** (1 / 3))
    assert 0 < noisy.low < noisy.mean < noisy.high
    assert re.fullmatch(r"[\d.]+x \(95 % CI [\d.]+–[\d.]+\)", noisy.text()), noisy.text()
    faster, slower = findings.Ratio([2.0, 4.0]), findings.Ratio([0.5, 0.25])
    assert faster.mean * slower.mean == pytest.approx(1) and faster.low * slower.high == pytest.approx(1)
