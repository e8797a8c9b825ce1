"""Each default in conf/ only, each pin in one place, framework names only in bench/runners/ and conf/framework/."""

import pytest
from hydra import compose, initialize_config_dir

from bench import config
from bench.run import framework_requirements

WORKER = ["sacrebleu==2.6.0", "rouge-score==0.1.2"]
TRL = ["trl==1.16.0", "torch==2.13.0", "transformers==5.24.0", "peft==0.21.2", "accelerate==1.15.0", "datasets==5.2.0"]
UNSLOTH = ["unsloth==2026.10.9", "trl==1.15.0", "transformers==5.17.0"]
AXOLOTL = ["axolotl==0.19.0", "torch==2.13.0"]
LLAMAFACTORY = ["llamafactory==0.9.5"]

# What each framework's environment installs for each train.kernels value, fixed: the kernel pins live once in
# conf/config.yaml (kernels:) and reach the framework files by interpolation.
EXPECTED = {
    ("axolotl", "none"): AXOLOTL + WORKER,
    ("axolotl", "liger"): AXOLOTL + WORKER,
    ("axolotl", "unsloth"): AXOLOTL + WORKER,
    ("llamafactory", "none"): LLAMAFACTORY + WORKER,
    ("llamafactory", "liger"): [*LLAMAFACTORY, "liger-kernel==0.8.5", *WORKER],
    ("llamafactory", "unsloth"): [*LLAMAFACTORY, "unsloth==2026.10.9", *WORKER],
    ("trl", "none"): TRL + WORKER,
    ("trl", "liger"): [*TRL, "liger-kernel==0.8.5", *WORKER],
    ("trl", "unsloth"): TRL + WORKER,
    ("unsloth", "none"): UNSLOTH + WORKER,
    ("unsloth", "liger"): UNSLOTH + WORKER,
    ("unsloth", "unsloth"): UNSLOTH + WORKER,
}


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(config.conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_every_registered_framework_and_kernel_choice_is_fixed():
    assert {fw for fw, _ in EXPECTED} == set(config.frameworks())


@pytest.mark.parametrize("framework, kernels", sorted(EXPECTED))
def test_requirement_lists_resolve_from_the_one_pin(framework, kernels):
    cfg = composed(f"framework={framework}", f"train.kernels={kernels}")
    typed = config.validate(cfg)
    assert framework_requirements(cfg.framework, list(cfg.worker_requirements), kernels) == EXPECTED[framework, kernels]
    assert framework_requirements(typed.framework, typed.worker_requirements, kernels) == EXPECTED[framework, kernels]


def test_a_kernel_pin_moves_every_framework_that_uses_it():
    for framework in ("trl", "llamafactory"):
        cfg = config.validate(composed(f"framework={framework}", "kernels.liger=9.9.9"))
        assert "liger-kernel==9.9.9" in framework_requirements(cfg.framework, [], "liger")
    cfg = config.validate(composed("framework=llamafactory", "kernels.unsloth=2099.1.1"))
    assert "unsloth==2099.1.1" in framework_requirements(cfg.framework, [], "unsloth")
    assert config.validate(composed("framework=unsloth", "kernels.unsloth=2099.1.1")).framework.version == "2099.1.1"
