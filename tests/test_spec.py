import dataclasses

import pytest

from bench.spec import DataSpec, JobSpec, ModelSpec, SpecError, TrainSpec, resolve_precision


def make_spec(**train) -> JobSpec:
    return JobSpec(
        framework="trl",
        framework_version="1.16.0",
        model=ModelSpec(name="tiny", source="random", path="/cache/tiny", config={"hidden_size": 64}),
        data=DataSpec(name="d", train_files=("/data/train.json",)),
        train=dataclasses.replace(TrainSpec(), **train),
        run_dir="/results/s/0-trl",
    )


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
    "train, message",
    [
        ({"precision": "fp8"}, "train.precision"),
        ({"scheduler": "warp"}, "train.scheduler"),
        ({"lr": 0.0}, "train.lr"),
        ({"max_steps": 0}, "train.max_steps"),
        ({"lora": dataclasses.replace(TrainSpec().lora, target_modules=())}, "target_modules"),
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
