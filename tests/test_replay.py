"""Published runs next to one job (bench.analysis.replay): what a published difference was made of, published claims
next to measurements, runs not as published, and a report over several sweeps. Fake sweeps, no training."""

import math
import statistics

import pandas as pd
import pytest
from scipy import stats

from bench.analysis import replay, report, runs
from bench.core import results

GPU_REASON = "Unsloth requires an NVIDIA/AMD/Intel GPU"
LEFT_OUT = ["train.quant=4bit: bitsandbytes needs a CUDA GPU; trained without quantisation",
            "model=qwen2.5-7b-arch: random weights of the architecture stand in for the published model"]  # fmt: skip
# The job fields of the seed tutorial's published runs that this test's two runs differ on (conf/scenario/).
TRL_JOB = {"model": "qwen2.5-0.5b-arch", "prompt_format": "### Question: {instruction}\n ### Answer: {output}",
           "train": {"max_seq_len": 512, "optimizer": "adamw_torch_fused", "batch_size": 1, "grad_accum": 1,
                     "epochs": 1, "lora": {"r": 8}}}  # fmt: skip
LF_JOB = {"model": "qwen2.5-7b-arch", "prompt_format": "chat",
          "train": {"max_seq_len": 2048, "optimizer": "adamw_torch", "batch_size": 2, "grad_accum": 8, "epochs": 3,
                    "lora": {"r": 8}}}  # fmt: skip
ONE_JOB = {"model": "qwen2.5-0.5b-arch", "prompt_format": "chat",
           "train": {"max_seq_len": 2048, "optimizer": "adamw_torch", "batch_size": 2, "grad_accum": 8, "epochs": 3,
                     "lora": {"r": 8}}}  # fmt: skip


def write_run(sweep, name, framework, job=None, *, status="ok", reason="", job_key=None, seed=42, fingerprint="fp",
              published=None, claims=(), steps=None, examples=None, metrics=None, quality=None):  # fmt: skip
    """A run directory as bench.run leaves it: summary.json and, for a run that trained, spec.json."""
    run = sweep / name
    run.mkdir(parents=True)
    summary = {"run": name, "framework": framework, "system": framework, "status": status, "reason": reason,
               "job_key": job_key, "seed": seed, "published": published, "claims": list(claims),
               "effective": {"max_steps": steps, "train_examples": examples}, "metrics": metrics or {},
               "quality": quality or {}, "hardware": {"gpus": []},
               "fingerprint": {"first_batches_sha256": fingerprint} if status == "ok" else {}}  # fmt: skip
    results.write_json_atomic(run / results.SUMMARY, summary)
    if job is not None:
        spec = {"model": {"name": job["model"], "path": f"/cache/{name}/{job['model']}"},
                "dataset": {"name": "medical-sample", "prompt_format": job["prompt_format"], "eos": False},
                "train": {"num_gpus": 1, "precision": "auto", **job["train"]},
                "eval": {"base": name.startswith("0-")}}  # fmt: skip
        results.write_json_atomic(run / results.SPEC, spec)


def published(as_published=False):
    left_out = [] if as_published else LEFT_OUT
    return {"source": "luochang212/sft-note", "as_published": as_published, "left_out": left_out}


@pytest.fixture
def published_sweep(tmp_path):
    """The seed tutorial's runs replayed on a CPU: LLaMA-Factory (not as published), TRL, Unsloth skipped."""
    d = tmp_path / "20261204-101010-published"
    write_run(d, "0-llamafactory", "llamafactory", LF_JOB, job_key="pub-lf", fingerprint="lf", published=published(),
              steps=6, examples=32, metrics={"train_s": 60.0, "tokens_per_s": 500.0},
              quality={"heldout_loss": 2.4})  # fmt: skip
    write_run(d, "1-trl", "trl", TRL_JOB, job_key="pub-trl", fingerprint="trl", published=published(True),
              steps=32, examples=32, metrics={"train_s": 40.0, "tokens_per_s": 300.0},
              quality={"heldout_loss": 2.0})  # fmt: skip
    write_run(d, "2-unsloth", "unsloth", status="skipped", reason=GPU_REASON, published=published())
    return d


ONE_JOB_TRAIN_S = {"trl": [10.0, 10.4, 9.8], "llamafactory": [12.0, 12.9, 11.6]}  # seeds 1, 2, 3


@pytest.fixture
def one_job_sweep(tmp_path):
    """TRL and LLaMA-Factory on one job, three seeds, same tokens per seed."""
    d = tmp_path / "20261204-111111-one-job"
    i = 0
    for framework, train_s in ONE_JOB_TRAIN_S.items():
        for seed, seconds in enumerate(train_s, start=1):
            write_run(d, f"{i}-{framework}", framework, ONE_JOB, job_key="one", seed=seed, fingerprint=f"s{seed}",
                      steps=6, examples=32, metrics={"train_s": seconds, "tokens_per_s": 1000.0 / seconds},
                      quality={"heldout_loss": 2.1})  # fmt: skip
            i += 1
    return d


def md_section(md: str, heading: str) -> str:
    return md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0] if f"## {heading}\n" in md else ""


def epoch_time(train_s, examples, steps, batch, accum):
    return train_s * examples / (steps * batch * accum)


def test_published_and_one_job_ratios_and_the_fields_that_differed(published_sweep, one_job_sweep):
    frame, _ = runs.load_runs(published_sweep, [one_job_sweep])
    heading, text, table = replay.difference_section(frame, "trl")
    timed = replay.with_epoch_time(frame)
    pair = (timed[replay.is_published(timed) & (timed["framework"] == f)].iloc[0] for f in ("trl", "llamafactory"))
    raw = pd.DataFrame(replay.pair_rows(tuple(pair), replay.one_job_runs(timed)))
    rows = raw.set_index("metric")
    published = epoch_time(60.0, 32, 6, 2, 8) / epoch_time(40.0, 32, 32, 1, 1)
    assert rows.loc["time_per_epoch_s", "published"] == pytest.approx(published)
    assert rows.loc["tokens_per_s", "published"] == pytest.approx(500.0 / 300.0)
    assert rows.loc["heldout_loss", "published"] == pytest.approx(2.4 / 2.0)
    assert math.isnan(rows.loc["peak_vram_mb", "published"])  # a CPU measures no VRAM
    per_seed = [lf / trl for lf, trl in zip(ONE_JOB_TRAIN_S["llamafactory"], ONE_JOB_TRAIN_S["trl"], strict=True)]
    logs = [math.log(r) for r in per_seed]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(logs) / math.sqrt(3)
    same = rows.loc["time_per_epoch_s"]
    assert same["same_job"] == pytest.approx(math.exp(statistics.fmean(logs))) and same["seed_pairs"] == 3
    bounds = (math.exp(statistics.fmean(logs) - half), math.exp(statistics.fmean(logs) + half))
    assert (same["ci95_low"], same["ci95_high"]) == pytest.approx(bounds)
    assert rows.loc["heldout_loss", "same_job"] == pytest.approx(1.0)
    shown = table[table["pair"] == "llamafactory vs trl"].set_index("metric").loc["time_per_epoch_s"]
    assert shown["published runs"] == f"{published:.3g}x"
    assert shown["same job"] == f"{same['same_job']:.3g}x [{same['ci95_low']:.3g}, {same['ci95_high']:.3g}]"
    share = 100 * math.log(same["same_job"]) / math.log(published)
    assert f"The framework accounts for {share:.0f} % of the published difference (on a log scale)" in text
    fields = text.split("Job fields that differed: ", 1)[1].rstrip(".").split(". ")[0].split(", ")
    assert set(fields) == {"job.model.name", "job.dataset.prompt_format", "job.train.max_seq_len",
                           "job.train.optimizer", "job.train.batch_size", "job.train.grad_accum",
                           "job.train.epochs"}  # fmt: skip
    rest = text.split("the rest is the job — ", 1)[1].split(". ", 1)[0].split(", ")
    assert rest == ["model", "prompt format", "sequence length", "optimizer", "batch", "length of training"]
    assert f"Of the published runs' {published:.3g}x time per epoch difference (llamafactory vs trl)" in text
    ci = f"{same['ci95_low']:.3g}-{same['ci95_high']:.3g}"
    assert f"the same job shows {same['same_job']:.3g}x (95 % CI {ci})" in text


def test_the_report_of_both_sweeps_says_a_skipped_published_run_has_no_ratio(published_sweep, one_job_sweep):
    report.build(published_sweep, others=[one_job_sweep])
    section = md_section((published_sweep / "report.md").read_text(), "What the difference was made of")
    assert f"unsloth vs trl: no ratio, the published unsloth run ended skipped: {GPU_REASON}." in section
    assert f"unsloth vs llamafactory: no ratio, the published unsloth run ended skipped: {GPU_REASON}." in section
    assert "Of the published runs'" in section and "| llamafactory vs trl | time_per_epoch_s" in section


def test_one_run_each_has_no_ci_and_other_tokens_no_ratio(published_sweep, tmp_path):
    one = tmp_path / "one"
    for i, (framework, fp) in enumerate([("trl", "a"), ("llamafactory", "a"), ("trl", "b"), ("llamafactory", "c")]):
        write_run(one, f"{i}-{framework}", framework, ONE_JOB, job_key="one" if fp == "a" else "other", seed=1,
                  fingerprint=fp, steps=6, examples=32, metrics={"train_s": 10.0 + i})  # fmt: skip
    frame, _ = runs.load_runs(published_sweep, [one])
    _, text, _ = replay.difference_section(frame, "trl")
    assert f"the same job shows {11.0 / 10.0:.3g}x (one run each, no CI)" in text
    other = replay.seed_ratios(frame[frame["job_key"] == "other"], "trl", "llamafactory", "train_s")
    assert other == ([], "trained on different tokens")


def test_no_decomposition_without_one_job_runs_of_two_frameworks(published_sweep):
    frame, _ = runs.load_runs(published_sweep)
    assert replay.difference_section(frame, "trl") is None


def test_a_run_not_as_published_is_marked_and_says_what_it_left_out(published_sweep, one_job_sweep):
    frame, _ = runs.load_runs(published_sweep, [one_job_sweep])
    table = report.runs_table(frame, frame["system"]).set_index("run directory")
    prefix = f"{published_sweep.name}/"
    assert table.loc[f"{prefix}0-llamafactory", "published"] == "not as published"
    assert table.loc[f"{prefix}1-trl", "published"] == "as published"
    assert table.loc[f"{one_job_sweep.name}/0-trl", "published"] == ""  # one job: no publication replayed
    report.build(published_sweep, others=[one_job_sweep])
    section = md_section((published_sweep / "report.md").read_text(), "Not as published")
    assert f"{prefix}0-llamafactory" in section and "; ".join(LEFT_OUT) in section and f"{prefix}1-trl" not in section
    assert f"{prefix}2-unsloth" in section and "skipped: " in section  # listed once, as skipped
    assert "| run" in md_section((published_sweep / "report.md").read_text(), "Runs that did not finish ok")


CLAIMS = [
    {"metric": "tokens_per_s", "baseline": "trl", "candidate": "unsloth", "ratio": 2.0, "source": "up to 2x faster"},
    {"metric": "peak_vram_mb", "baseline": "trl", "candidate": "unsloth", "ratio": 0.3, "source": "70% less VRAM"},
    {"metric": "tokens_per_s", "baseline": "trl", "candidate": "axolotl", "ratio": 1.5, "source": "1.5x faster"},
]
MEASURED = {"trl": [(1000.0, 8000.0), (1040.0, 8100.0)], "unsloth": [(2500.0, 6400.0), (2560.0, 6600.0)]}


@pytest.fixture
def claims_frame(tmp_path):
    """TRL and Unsloth on one job, two seeds (tokens/s, peak VRAM), every run carrying the claims; Axolotl
    skipped."""
    d = tmp_path / "claims"
    i = 0
    for framework, measured in MEASURED.items():
        for seed, (tps, vram) in enumerate(measured, start=1):
            write_run(d, f"{i}-{framework}", framework, ONE_JOB, job_key="one", seed=seed, fingerprint=f"s{seed}",
                      claims=CLAIMS, metrics={"tokens_per_s": tps, "peak_vram_mb": vram})  # fmt: skip
            i += 1
    write_run(d, f"{i}-axolotl", "axolotl", status="skipped", reason="axolotl is not installed", claims=CLAIMS)
    return runs.load_runs(d)[0]


def test_claims_hold_do_not_hold_or_are_not_measurable_here(claims_frame):
    _, _, table = replay.claims_section(claims_frame)
    rows = table.set_index("claim")
    faster = rows.loc["tokens_per_s: unsloth vs trl, 2x"]
    speedups = [u[0] / t[0] for u, t in zip(MEASURED["unsloth"], MEASURED["trl"], strict=True)]
    assert faster["measured"] == pytest.approx(statistics.geometric_mean(speedups)) and faster["verdict"] == "holds"
    assert faster["source"] == "up to 2x faster" and faster["95 % CI"].count("-") == 1
    vram = rows.loc["peak_vram_mb: unsloth vs trl, 0.3x"]
    savings = [u[1] / t[1] for u, t in zip(MEASURED["unsloth"], MEASURED["trl"], strict=True)]
    assert vram["measured"] == pytest.approx(statistics.geometric_mean(savings)) and vram["verdict"] == "does not hold"
    axolotl = rows.loc["tokens_per_s: axolotl vs trl, 1.5x"]
    assert axolotl["verdict"] == "not measurable here: the axolotl run ended skipped: axolotl is not installed"
    assert len(table) == len(CLAIMS)  # every run carries them: each once


def test_a_claim_on_one_pair_is_judged_on_its_point_without_ci_and_vram_is_not_measured_on_a_cpu(claims_frame):
    one_seed = claims_frame[claims_frame["seed"] == 1]
    faster = replay.claim_row(one_seed, CLAIMS[0])
    assert faster["95 % CI"] == "one run each, no CI" and faster["verdict"] == "holds"
    no_vram = one_seed.assign(peak_vram_mb=None)
    assert replay.claim_row(no_vram, CLAIMS[1])["verdict"] == (
        "not measurable here: no peak_vram_mb measured (trained on a CPU)"
    )
    other_tokens = claims_frame.assign(fingerprint=claims_frame["framework"])
    assert replay.claim_row(other_tokens, CLAIMS[0])["verdict"] == "not measurable here: trained on different tokens"


def test_a_claim_inside_the_interval_holds_though_its_point_falls_short():
    values = [1.7, 2.2]  # geometric mean 1.93 < 2 claimed, but the interval spans it
    mean, low, high = replay.ratio_interval(values)
    assert mean < 2.0 < high and replay.verdict(2.0, mean, low, high, higher_is_better=True) == "holds"
    one = replay.verdict(2.0, mean, math.nan, math.nan, higher_is_better=True)
    assert one == "does not hold"  # one pair: the point


def test_the_report_writes_into_the_first_sweep_with_unique_run_names(published_sweep, one_job_sweep, capsys):
    assert report.main([str(published_sweep), str(one_job_sweep)]) == 0
    assert not (one_job_sweep / "report.md").exists()
    runs = pd.read_csv(published_sweep / "runs.csv")["run"]
    assert runs.is_unique and len(runs) == 3 + 6
    assert {r.split("/", 1)[0] for r in runs} == {published_sweep.name, one_job_sweep.name}
    md = (published_sweep / "report.md").read_text()
    assert md.startswith(f"# sftbench report: {published_sweep.name} + {one_job_sweep.name}")
    assert "## What the difference was made of" in md and "## Claims next to measurements" not in md


def test_a_missing_other_sweep_is_one_line_and_exit_2(published_sweep, tmp_path, capsys):
    assert report.main([str(published_sweep), str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'}: not a sweep directory\n"
    same_name = tmp_path / "elsewhere" / published_sweep.name
    same_name.mkdir(parents=True)
    assert report.main([str(published_sweep), str(same_name)]) == 2
    assert "two share a directory name" in capsys.readouterr().err


def test_one_sweep_keeps_its_run_names_and_its_runs_table(one_job_sweep):
    report.build(one_job_sweep)
    assert list(pd.read_csv(one_job_sweep / "runs.csv")["run"]) == [f"{i}-{f}" for i, f in enumerate(
        ["trl"] * 3 + ["llamafactory"] * 3)]  # fmt: skip
    md = (one_job_sweep / "report.md").read_text()
    header = next(line for line in md_section(md, "Runs").splitlines() if line.startswith("| system"))
    assert "run directory" in header and "published" not in header and "What the difference was made of" not in md


def test_published_figures_are_set_beside_the_measured_only_where_hardware_and_data_match(tmp_path):
    d = tmp_path / "figures"
    unlike = ["hardware: published NVIDIA GeForce RTX 4070 Laptop GPU, 8 GB, here a CPU (no GPU on this host)"]
    write_run(d, "0-trl", "trl", TRL_JOB, job_key="a", metrics={"train_s": 12.0},
              published=published() | {"train_s": 17254.0699, "unlike": unlike})  # fmt: skip
    write_run(d, "1-llamafactory", "llamafactory", LF_JOB, job_key="b",
              published=published(True) | {"train_s": 3000.0, "peak_memory_gb": 7.7},
              metrics={"train_s": 2950.0, "peak_vram_mb": 7.5 * 1024})  # fmt: skip
    frame, _ = runs.load_runs(d)
    heading, text, table = replay.published_figures(frame)
    assert f"trl: published training 1.725e+04 s; not set beside this run's: {unlike[0]}." in text
    (row,) = table.to_dict("records")
    assert row == {"system": "llamafactory", "published train s": 3000.0, "measured train s": 2950.0,
                   "published peak GB": 7.7, "measured peak VRAM GB": 7.5}  # fmt: skip
