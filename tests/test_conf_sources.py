"""Each default in conf/ only, each pin in one place, framework names only in runners and conf/framework/."""

import pytest
from hydra import compose, initialize_config_dir

from bench.core import config
from bench.sweep.app import framework_requirements

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


# What may name a framework (or a train.kernels choice) in bench/*.py outside bench/worker/runners/, and why:
# (module, the string literal's start).
ALLOWED = {
    # The spec's vocabulary of train.kernels choices (Literal["none", "liger", "unsloth"]), validated at the edge;
    # `unsloth` there is LLaMA-Factory's kernel switch, not the framework.
    ("bench/core/spec.py", "liger"),
    ("bench/core/spec.py", "unsloth"),
    # STACK: the training stack whose versions every run records; TRL is under LLaMA-Factory and Unsloth too.
    ("bench/core/spec.py", "trl"),
    # framework.token_metrics' refusal names the one framework the option is for (which conf/framework/ declares)
    ("bench/sweep/app.py", "); the option is TRL's"),
    # --help text: an example of naming another baseline, not a default (that is conf's report.baseline).
    ("bench/analysis/report.py", "examples: python -m bench.report results/<sweep> --baseline llamafactory"),
}


def framework_mentions() -> set[tuple[str, str]]:
    """(module, text) for every string literal (docstrings aside), name, attribute and definition in bench/
    (runners aside) that names a registered framework or a train.kernels choice, as a word
    ('_' counts as a separator)."""
    import ast
    import re

    from tests.conftest import REPO

    kernels = composed().kernels
    words = sorted({*config.frameworks(), *kernels})
    pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, words)) + r")(?![A-Za-z0-9])", re.IGNORECASE)
    found = set()
    runners = REPO / "bench" / "worker" / "runners"
    for path in sorted(p for p in (REPO / "bench").rglob("*.py") if runners not in p.parents):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                text = node.value
            elif isinstance(node, ast.Name):
                text = node.id
            elif isinstance(node, ast.Attribute):
                text = node.attr
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                text = node.name
            else:
                continue
            if pattern.search(text):
                found.add((str(path.relative_to(REPO)), text))
    return found


def test_no_framework_is_named_outside_runners_and_conf():
    """Framework-specific code belongs in bench/worker/runners/<name>.py, its facts in conf/framework/<name>.yaml:
    a bench/*.py module that names one (other than the allowed entries above) fails here."""
    mentions = framework_mentions()
    def allowed(module: str, text: str) -> bool:
        return any(m == module and text.startswith(start) for m, start in ALLOWED)

    assert {(module, text) for module, text in mentions if not allowed(module, text)} == set()
    stale = {(m, start) for m, start in ALLOWED if not any(mm == m and t.startswith(start) for mm, t in mentions)}
    assert not stale, f"allow-list entries that no longer match anything: {stale}"


def test_defaults_outside_a_composed_config_come_from_conf(monkeypatch, tmp_path):
    import inspect

    from bench.analysis import report
    from bench.core import models
    from bench.sweep.sampler import Sampler

    baseline = composed().report.baseline
    assert config.default_baseline() == baseline
    assert inspect.signature(report.compose).parameters["baseline"].default == baseline
    assert inspect.signature(report.build).parameters["baseline"].default == baseline
    monkeypatch.setenv("SFTBENCH_CACHE", str(tmp_path))
    assert config.default_cache_dir() == config.validate(composed()).cache_path == tmp_path
    monkeypatch.delenv("SFTBENCH_CACHE")
    assert config.default_cache_dir() == config.validate(composed()).cache_path
    for dataset in ("medical-sample", "medical"):  # one system prompt: medical extends medical-sample
        assert composed(f"dataset={dataset}").dataset.system_prompt == models.corpus_system_prompt()
    params = inspect.signature(Sampler).parameters  # the sampler group's values have no second default
    assert params["interval_s"].default is params["gpu"].default is inspect.Parameter.empty
