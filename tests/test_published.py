"""The job fields published runs set, checked at the edge; a published run replayed on a host that cannot
honour all of it; scenarios that set their framework sweep once each."""

import dataclasses

import pytest

from bench.core.errors import SpecError, UserError
from bench.sweep import app as run
from bench.sweep import published
from bench.sweep.app import job_spec
from tests.test_config import typed

PLAIN = "### Question: {instruction}\n ### Answer: {output}"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epochs=3"], "train.epochs=3.0 and train.max_steps=30: exactly one is set; to train for max_steps, add "
                             "train.epochs=null; to train by epochs, train.max_steps=null"),
        (["train.max_steps=null"], "exactly one is set; set train.max_steps=N, or train.epochs=E"),
        (["train.optimizer=sgd"], "train.optimizer='sgd': expected one of adamw_torch, adamw_torch_fused"),
        (["dataset.prompt_format='Q: {instruction}'"], "no {output} field, so no answer to train on"),
        (["dataset.prompt_format='Q: {question} A: {output}'"], "unknown field {question}; a format knows"),
        (["dataset.prompt_format='{output} was the answer'"], "must end with {output}"),
        (["dataset.prompt_format='{output}'"], "nothing before {output}, so no prompt apart from the answer"),
        (["dataset.eos=true"], "dataset.eos=true: the chat template ends the answer itself"),
        (["dataset.prompt_format='Q: {instruction:>99999999} A: {output}'"],
         "{instruction:>99999999} has a format spec; a field is the bare name: {instruction}"),
        (["dataset.prompt_format='Q: {instruction!r} A: {output}'"], "{instruction!r} has a conversion"),
        (["train.epochs=1", "train.max_steps=null", "train.packing=packed"],
         "set train.max_steps=N (and train.epochs=null) instead, or train.packing=none to keep training by epochs"),
        (["train.max_grad_norm=-1"], "train.max_grad_norm=-1.0: must be >= 0"),
        (["train.lr=inf"], "train.lr=inf: must be a finite number"),
        (["train.weight_decay=inf"], "train.weight_decay=inf: must be a finite number"),
        (["train.epochs=nan", "train.max_steps=null"], "train.epochs=nan: must be a finite number > 0"),
        (["train.epochs=inf", "train.max_steps=null"], "train.epochs=inf: must be a finite number > 0"),
        (["train.epochs=1e300", "train.max_steps=null"], "train.epochs=1e+300: 6e+301 steps"),
        (["train.max_steps=10000000"], "train.max_steps=10000000: more than 1,000,000 optimizer steps"),
    ],
)
def test_bad_job_fields_are_one_line_before_any_run(tmp_path, overrides, message):
    with pytest.raises(SpecError) as e:
        job_spec(typed(*overrides, f"cache_dir={tmp_path}"), tmp_path / "run")
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_format_with_only_the_answer_trains_with_the_loss_on_every_token(tmp_path):
    spec = job_spec(typed("dataset.prompt_format='{output}'", "train.loss_on=all", f"cache_dir={tmp_path}"), tmp_path)
    assert spec.dataset.prompt_format == "{output}"


def test_epochs_become_one_step_count_over_the_usable_rows(tmp_path):
    """240 bundled rows, 2 epochs, a global batch of 4 x 3: ceil(2 x 240 / 12) = 40 steps, for every framework."""
    c = typed("train.epochs=2", "train.max_steps=null", "train.batch_size=4", "train.grad_accum=3",
              f"cache_dir={tmp_path}")  # fmt: skip
    spec = job_spec(c, tmp_path)
    assert (spec.train.epochs, spec.train.max_steps) == (2, 40)
    assert run.steps_note(spec, 240) == ["train.epochs=2: 40 steps over 240 rows (global batch 12)"]
    half = job_spec(typed("train.epochs=0.5", "train.max_steps=null", f"cache_dir={tmp_path}"), tmp_path)
    assert half.train.max_steps == 30  # ceil(0.5 x 240 / 4)


def test_an_8bit_optimizer_asked_for_on_a_cpu_is_skipped_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "host_has_gpu", lambda: False)
    c = typed("train.optimizer=adamw_8bit", f"cache_dir={tmp_path}")
    reason = run.host_reason(c.framework, job_spec(c, tmp_path))
    assert reason == "train.optimizer=adamw_8bit: bitsandbytes needs a CUDA GPU; none found on this host"


def differences_of(c, tmp_path, *overrides, gpus=(), scenario):
    spec = job_spec(c, tmp_path)
    return spec, published.record(c, scenario, spec.dataset, 240, [f"scenario={scenario}", *overrides], list(gpus))


def test_a_published_run_on_a_cpu_lists_every_difference_with_both_values_and_its_cause(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "host_has_gpu", lambda: False)
    c = typed("scenario=seed-unsloth", "framework=trl", "model=tiny", f"cache_dir={tmp_path}")
    spec, record = differences_of(c, tmp_path, "framework=trl", "model=tiny", scenario="seed-unsloth")
    assert (spec.train.quant, spec.train.optimizer) == ("none", "adamw_torch")  # what really runs, in the job key
    assert record["source"] == "luochang212/sft-note 3.unsloth.ipynb" and record["as_published"] is False
    left_out = record["left_out"]
    for line in ("framework: published unsloth, here trl (set on the command line)",
                 "train.quant: published 4bit, here none (no GPU on this host)",
                 "train.optimizer: published adamw_8bit, here adamw_torch (no GPU on this host)",
                 "train.gradient_checkpointing: published true, here false (no GPU on this host)",
                 "framework.version: published 2025.3.19, here 1.16.0 (another release)",
                 "data: published the first 1,000 rows of train_zh_0.json, here 240 bundled rows (a stand-in"):
        assert any(x.startswith(line) for x in left_out), (line, left_out)
    assert any(x.startswith("hardware: published ") and x.endswith("a CPU (no GPU on this host)") for x in left_out)
    assert any(x.startswith("model: published ") and "here random weights of its architecture (tiny)" in x
               for x in left_out)  # fmt: skip
    assert run.host_reason(c.framework, spec) is None  # it runs, without them
    # its published time (cell 12's 46 s) is not set beside this run's: hardware and data differ
    assert record["train_s"] == 46 and [u.split(":")[0] for u in record["unlike"]] == ["data", "hardware"]


def test_an_override_of_a_published_value_is_listed(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "host_has_gpu", lambda: True)
    c = typed("scenario=seed-trl", "train.lr=1e-4", "dataset.max_rows=500", f"cache_dir={tmp_path}")
    _, record = differences_of(c, tmp_path, "train.lr=1e-4", "dataset.max_rows=500", gpus=["NVIDIA H100"],
                               scenario="seed-trl")  # fmt: skip
    assert "train.lr: published 5e-05, here 0.0001 (set on the command line)" in record["left_out"]
    assert "dataset.max_rows: published 1000, here 500 (set on the command line)" in record["left_out"]


def test_an_exact_replay_on_the_published_gpu_is_as_published(monkeypatch, tmp_path):
    """The published model, the published rows (the first 1,000 of train_zh_0.json), the published release,
    on the published GPU: nothing differs but what the scenario says the harness cannot express."""
    monkeypatch.setattr(run, "host_has_gpu", lambda: True)
    c = typed("scenario=seed-llamafactory", f"cache_dir={tmp_path}")
    p = c.published
    model = dataclasses.replace(c.model, source="local", path=f"/models/{p.model.split('/')[-1]}")
    c = dataclasses.replace(c, model=model, framework=dataclasses.replace(c.framework, version=p.release),
                            published=dataclasses.replace(p, not_expressible=[]))  # fmt: skip
    dataset = dataclasses.replace(job_spec(c, tmp_path).dataset, name="medical", source_files=(f"/data/{p.data_file}",))
    gpus = [f"NVIDIA GeForce {p.gpu} GPU"]
    assert published.differences(c, "seed-llamafactory", dataset, p.rows, ["scenario=seed-llamafactory"], gpus) == []
    cannot = dataclasses.replace(p, not_expressible=["something no job value says"])
    record = published.record(dataclasses.replace(c, published=cannot), "seed-llamafactory", dataset, p.rows, [], gpus)
    assert record["as_published"] is False and all(x.startswith("not expressible") for x in record["left_out"])


def test_outside_a_published_scenario_nothing_is_left_out(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "host_has_gpu", lambda: False)
    c = typed("train.quant=4bit", f"cache_dir={tmp_path}")
    spec = job_spec(c, tmp_path)
    assert spec.train.quant == "4bit" and published.record(c, None, spec.dataset, 240, [], []) is None


def test_scenarios_that_set_their_framework_sweep_once_each():
    argv = ["scenario=seed-llamafactory,seed-trl,seed-unsloth", "model=tiny"]
    assert run.pinned_frameworks(argv) == [*argv, "~hydra.sweeper.params.framework"]
    assert run.pinned_frameworks(["scenario=seed-0.5b"]) == ["scenario=seed-0.5b"]
    assert run.pinned_frameworks(["scenario=seed-trl", "framework=llamafactory"])[-1] == "framework=llamafactory"
    with pytest.raises(UserError, match="seed-trl set their framework, the others do not"):
        run.pinned_frameworks(["scenario=seed-trl,seed-0.5b"])


def test_the_published_release_where_the_runner_cannot_drive_it_is_one_line(tmp_path):
    """trl 0.9.6 (the seed notebook's) is refused before any run, with the releases the TRL runner drives."""
    with pytest.raises(SpecError) as e:
        typed("scenario=seed-trl", "framework.version=0.9.6", f"cache_dir={tmp_path}")
    assert str(e.value).startswith("framework.version=0.9.6: the trl runner drives releases >=0.24 (SFTConfig's")
    assert "\n" not in str(e.value)
    assert typed("scenario=seed-trl", "framework.version=0.24.0", f"cache_dir={tmp_path}").framework.version == "0.24.0"


def test_a_framework_without_token_metrics_refuses_the_switch_with_the_reason(tmp_path):
    reason = run.option_reason(typed("framework=axolotl", "framework.token_metrics=false").framework)
    assert reason.startswith("framework.token_metrics=false: axolotl has no per-token training metrics to switch")
    assert run.option_reason(typed("framework=trl", "framework.token_metrics=false").framework) is None
    assert run.option_reason(typed("framework=axolotl").framework) is None
