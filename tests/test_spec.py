import dataclasses
import json
import math
import re

import pytest

from bench.core.spec import JobSpec, SpecError, resolve_precision
from tests.conftest import DEFAULT_EVAL, DEFAULT_TRAIN, make_spec


def test_spec_round_trips_through_json():
    spec = make_spec(lr=1e-4)
    assert JobSpec.from_dict(__import__("json").loads(spec.to_json())) == spec


def test_wrong_typed_value_is_named():
    d = dataclasses.asdict(make_spec())
    d["train"]["lr"] = "abc"
    with pytest.raises(SpecError, match=r"spec.train.lr='abc': expected float"):
        JobSpec.from_dict(d)


def test_unknown_key_is_rejected():
    d = dataclasses.asdict(make_spec())
    d["train"]["learning_rate"] = 1e-4
    with pytest.raises(SpecError, match="unknown key.*learning_rate"):
        JobSpec.from_dict(d)


@pytest.mark.parametrize(
    "field, value",
    [("precision", "fp8"), ("scheduler", "warp"), ("quant", "2bit"), ("optimizer", "sgd"), ("loss_on", "prompt")],
)
def test_an_enum_value_outside_its_choices_is_named_with_them(field, value):
    d = dataclasses.asdict(make_spec())
    d["train"][field] = value
    with pytest.raises(SpecError, match=rf"spec.train.{field}='{value}': expected one of "):
        JobSpec.from_dict(d)


def test_a_missing_key_is_named():
    d = dataclasses.asdict(make_spec())
    del d["train"]["lr"]
    with pytest.raises(SpecError, match=r"spec.train: missing key\(s\) lr"):
        JobSpec.from_dict(d)


# A spec written out in full (no conf/ defaults), and its job key: a job key's field names are frozen (`data`
# and `evaluation` were renamed `dataset` and `eval` without changing it). Its format changed once, when the data
# came to be identified by the rows selected (selection_sha256) instead of the source files and the settings
# that selected from them (files_sha256, max_rows, shuffle_seed, on_bad_row, max_row_bytes): was 1f94e38bc28f.
FIXED_SPEC = {
    "framework": "trl", "framework_version": "1.16.0", "runner": "bench.worker.runners.trl", "packages": ["trl"],
    "model": {"name": "tiny", "source": "random", "path": "/cache/tiny", "config": {"hidden_size": 64},
              "trust_remote_code": False},
    "dataset": {"name": "d", "train_file": "/cache/data/selections/0/train.jsonl", "eval_file": None,
                "selection_sha256": "0" * 64, "source_files": ["/data/train.json"], "eval_source_files": [],
                "source_sha256": ["1" * 64], "system_prompt": "You are Qwen.",
                "prompt_format": "chat", "eos": False, "max_rows": None, "tokenize": "framework",
                "on_bad_row": "error", "shuffle_seed": None, "fill_to": None, "max_row_bytes": 1000000},
    "train": {"lora": {"r": 16, "alpha": 32, "dropout": 0.0,
                       "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
              "lr": 0.002, "scheduler": "linear", "warmup_steps": 2, "batch_size": 4, "grad_accum": 1,
              "max_seq_len": 512, "max_steps": 30, "epochs": None, "optimizer": "adamw_torch_fused",
              "weight_decay": 0.0, "max_grad_norm": 1.0, "loss_on": "answer", "seed": 42, "precision": "auto",
              "gradient_checkpointing": False, "quant": "none", "quant_double": True, "quant_compute_dtype": "auto",
              "vram_budget_gb": None, "num_gpus": 1, "attn_implementation": "sdpa", "chat_template": "qwen2.5",
              "packing": "none", "kernels": "none"},
    "eval": {"enabled": True, "prompts": 8, "max_new_tokens": 64, "batch_size": 8, "every_steps": None,
             "target_loss": None, "base": False},
    "skip_steps": 3, "run_dir": "/results/s/0-trl",
}  # fmt: skip


def test_the_job_key_of_a_fixed_spec_is_the_one_earlier_harness_versions_computed():
    spec = JobSpec.from_dict(FIXED_SPEC)
    assert spec.job_key() == "4c2db3b25c42"
    assert {k.split(".")[0] for k in spec.job_fields()} == {"model", "data", "train", "eval", "skip_steps"}


def test_the_job_key_ignores_framework_version_seed_and_where_things_lie():
    spec = make_spec()
    same = dataclasses.replace(
        make_spec(seed=7),
        framework="unsloth",
        framework_version="2026.10.9",
        run_dir="/elsewhere/1-unsloth",
        model=dataclasses.replace(spec.model, path="/other-cache/tiny"),  # a built model: its recipe counts
        # the rows selected count, not where they lie, where they came from or the settings that selected them
        dataset=dataclasses.replace(spec.dataset, train_file="/other-cache/train.jsonl", source_files=("/a.json",),
                                    source_sha256=("2" * 64,), max_rows=100, shuffle_seed=3),
        eval=dataclasses.replace(spec.eval, base=True),
    )
    assert same.job_key() == spec.job_key()


@pytest.mark.parametrize(
    "change",
    [
        {"gradient_checkpointing": True}, {"scheduler": "cosine"}, {"warmup_steps": 0}, {"num_gpus": 2},
        {"attn_implementation": "eager"}, {"vram_budget_gb": 24.0}, {"lr": 1e-4}, {"max_seq_len": 64},
        {"packing": "padding_free"}, {"packing": "packed"},
    ],
)  # fmt: skip
def test_every_training_field_but_the_seed_changes_the_job_key(change):
    assert make_spec(**change).job_key() != make_spec().job_key()


def test_kernels_name_the_system_under_test_not_another_job():
    liger = make_spec(kernels="liger")
    assert liger.job_key() == make_spec().job_key()
    assert (liger.system(), make_spec().system()) == ("trl+liger", "trl")


def test_a_target_loss_without_evaluation_during_training_is_refused():
    spec = dataclasses.replace(make_spec(), eval=dataclasses.replace(DEFAULT_EVAL, target_loss=2.0))
    with pytest.raises(SpecError, match="eval.target_loss needs .* eval.every_steps=N"):
        spec.validate()


def test_lora_data_model_and_eval_fields_change_the_job_key():
    spec = make_spec()
    changed = [
        make_spec(lora=dataclasses.replace(spec.train.lora, alpha=64)),
        dataclasses.replace(spec, dataset=dataclasses.replace(spec.dataset, selection_sha256="1" * 64)),
        dataclasses.replace(spec, dataset=dataclasses.replace(spec.dataset, tokenize="harness")),
        dataclasses.replace(spec, model=dataclasses.replace(spec.model, config={"hidden_size": 128})),
        dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, prompts=2)),
        dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, every_steps=5)),
        dataclasses.replace(spec, skip_steps=5),
    ]
    assert len({s.job_key() for s in changed} | {spec.job_key()}) == len(changed) + 1


def test_a_pretrained_model_is_identified_by_its_path():
    spec = make_spec()
    hub = dataclasses.replace(spec, model=dataclasses.replace(spec.model, source="pretrained", path="Qwen/A"))
    other = dataclasses.replace(hub, model=dataclasses.replace(hub.model, path="Qwen/B"))
    assert hub.job_key() != other.job_key()


def test_the_spec_round_trips_with_its_job_key():
    spec = make_spec()
    assert JobSpec.from_dict(json.loads(spec.to_json())).job_key() == spec.job_key()


@pytest.mark.parametrize(
    "train, message",
    [
        ({"lr": 0.0}, "train.lr"),
        ({"max_steps": 0}, "train.max_steps"),
        ({"lora": dataclasses.replace(DEFAULT_TRAIN.lora, target_modules=())}, "target_modules"),
    ],
)
def test_validate_rejects_unusable_values(train, message):
    with pytest.raises(SpecError, match=message):
        make_spec(**train).validate()


def test_cpu_always_trains_in_fp32():
    assert resolve_precision("bf16", on_gpu=False, bf16_supported=False) == "fp32"
    assert resolve_precision("auto", on_gpu=False, bf16_supported=False) == "fp32"


def test_auto_precision_picks_bf16_where_the_gpu_has_it():
    assert resolve_precision("auto", on_gpu=True, bf16_supported=True) == "bf16"
    assert resolve_precision("auto", on_gpu=True, bf16_supported=False) == "fp32"
    with pytest.raises(SpecError):
        resolve_precision("bf16", on_gpu=True, bf16_supported=False)


def float_fields(cls, prefix=""):
    """Every float-typed field of a spec dataclass, nested ones included, by its key (`train.lora.dropout`)."""
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from float_fields(tp, f"{prefix}{f.name}.")
        elif tp is float or float in typing.get_args(tp):
            yield f"{prefix}{f.name}"


def replaced(spec, key, value):
    head, _, rest = key.partition(".")
    if not rest:
        return dataclasses.replace(spec, **{head: value})
    return dataclasses.replace(spec, **{head: replaced(getattr(spec, head), rest, value)})


@pytest.mark.parametrize("key", sorted(float_fields(JobSpec)))
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_of_the_job_must_be_finite(key, value):
    with pytest.raises(SpecError, match=rf"^{re.escape(key)}={value}: must be a finite number$"):
        replaced(make_spec(), key, value).validate()


def test_the_float_fields_checked_are_the_ones_a_job_has():
    assert {"train.lr", "train.epochs", "train.weight_decay", "train.lora.dropout"} <= set(float_fields(JobSpec))


def test_the_kernels_a_job_can_ask_for_are_the_ones_conf_pins():
    import typing

    from omegaconf import OmegaConf

    from bench.core.spec import Kernels
    from tests.conftest import REPO

    pinned = OmegaConf.load(REPO / "conf" / "config.yaml").kernels
    assert set(typing.get_args(Kernels)) == {"none", *pinned}
