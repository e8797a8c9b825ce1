"""Config composition: Hydra groups -> the framework-neutral job spec."""

import dataclasses
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench.core.config import validate
from bench.core.errors import DataError, SpecError, UserError
from bench.sweep.app import job_spec
from tests.conftest import REPO

CONF = str(REPO / "conf")


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)


def typed(*overrides: str):
    return validate(cfg(*overrides))


def test_primary_config_sweeps_without_dash_m():
    raw = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "config.yaml"), resolve=False)
    assert raw["hydra"]["mode"] == "MULTIRUN"
    assert raw["hydra"]["sweep"]["dir"].startswith("${results_dir}/")


def test_default_job_is_the_tiny_model_on_the_bundled_sample(tmp_path):
    spec = job_spec(typed(f"cache_dir={tmp_path}"), tmp_path / "run")
    assert spec.framework == "trl"
    assert spec.model.source == "random" and spec.model.path.startswith(str(tmp_path / "models" / "tiny-"))
    assert [Path(f).name for f in spec.dataset.source_files] == ["train_zh_0.json"]
    assert [Path(f).name for f in spec.dataset.eval_source_files] == ["valid_zh_0.json"]
    assert Path(spec.dataset.train_file).parent == tmp_path / "data" / "selections" / spec.dataset.selection_sha256
    assert spec.train.lora.r == 16 and spec.train.chat_template == "qwen2.5"
    assert spec.model.trust_remote_code is False


def test_overrides_reach_the_spec(tmp_path):
    spec = job_spec(typed("train.lr=1e-4", "train.lora.r=8", "train.max_steps=5", "skip_steps=1"), tmp_path)
    assert (spec.train.lr, spec.train.lora.r, spec.train.max_steps, spec.skip_steps) == (1e-4, 8, 5, 1)


@pytest.mark.parametrize("model", ["qwen2.5-0.5b", "qwen2.5-7b"])
def test_pretrained_presets_name_the_hub_model(tmp_path, model):
    spec = job_spec(typed(f"model={model}"), tmp_path)
    assert spec.model.source == "pretrained" and spec.model.path.startswith("Qwen/Qwen2.5-")


def test_local_model_path_is_used_as_is(tmp_path):
    spec = job_spec(typed("model=qwen2.5-0.5b", f"model.path={tmp_path}"), tmp_path)
    assert spec.model.path == str(tmp_path)


@pytest.mark.parametrize("model, hidden", [("qwen2.5-0.5b-arch", 896), ("qwen2.5-7b-arch", 3584)])
def test_architecture_presets_build_the_real_shape_without_download(tmp_path, model, hidden):
    spec = job_spec(typed(f"model={model}", f"cache_dir={tmp_path}"), tmp_path)
    assert spec.model.source == "random" and spec.model.config["hidden_size"] == hidden


def test_user_dataset_file(tmp_path, write_jsonl):
    path = write_jsonl([{"instruction": "a", "input": "", "output": "b"}])
    spec = job_spec(typed(f"dataset.path={path}"), tmp_path)
    assert spec.dataset.source_files == (str(path),) and spec.dataset.eval_file is None
    assert Path(spec.dataset.train_file).read_bytes() == path.read_bytes()  # the run reads the selection


def test_missing_dataset_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="missing.jsonl: dataset file not found"):
        job_spec(typed(f"dataset.path={tmp_path / 'missing.jsonl'}"), tmp_path)


def test_framework_version_selects_its_own_requirements():
    from bench.sweep.app import framework_requirements

    old, new = (
        framework_requirements(cfg("framework.version=0.24.0").framework),
        framework_requirements(cfg().framework),
    )
    assert "trl==0.24.0" in old and "transformers==4.57.6" in old
    assert "trl==1.16.0" in new and "transformers==5.24.0" in new


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.max_rows=abc", "dataset.max_rows='abc': expected int"),
        ("eval.prompts=abc", "eval.prompts='abc': expected int"),
        ("dataset.shuffle_seed=x", "dataset.shuffle_seed='x': expected int"),
        ("dataset.on_bad_row=ignore", "dataset.on_bad_row='ignore': expected one of error, skip"),
        ("dataset.tokenize=both", "dataset.tokenize='both': expected one of framework, harness"),
        ("train.precision=fp8", "train.precision='fp8': expected one of auto, fp32, bf16, fp16"),
        ("sampler.interval_s=fast", "sampler.interval_s='fast': expected float"),
        ("timeout_s=soon", "timeout_s='soon': expected float"),
        ("model.source=magic", "model.source='magic': expected one of pretrained, random"),
        ("+eval.unknown_key=1", "eval: unknown key(s) unknown_key; known: enabled, prompts, max_new_tokens"),
        ("+dataset.colour=red", "dataset: unknown key(s) colour; known: name, path, train_glob"),
    ],
)
def test_a_bad_value_in_any_group_is_one_error_naming_its_key(override, message):
    with pytest.raises(SpecError) as e:
        typed(override)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_frontier_group_is_validated_too():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        raw = compose(config_name="frontier", overrides=["frontier.axis=depth"], return_hydra_config=False)
    with pytest.raises(SpecError, match="frontier.axis='depth': expected one of seq_len, batch"):
        validate(raw)


def test_every_bad_value_is_a_user_error():
    assert issubclass(SpecError, UserError) and issubclass(DataError, UserError)


def test_defaults_live_in_conf_only():
    import dataclasses

    from bench.core.spec import LoraSpec, TrainSpec

    for cls in (TrainSpec, LoraSpec):
        assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(cls)), cls


@pytest.mark.parametrize(
    "override, gpu, reason",
    [
        ("framework=unsloth", False, "unsloth requires an NVIDIA/AMD/Intel GPU; none found on this host"),
        ("framework=unsloth", True, None),
        ("framework=trl", False, None),
    ],
)
def test_a_framework_that_needs_a_gpu_is_skipped_on_a_host_without_one(monkeypatch, tmp_path, override, gpu, reason):
    from bench.sweep import app as run

    monkeypatch.setattr(run, "host_has_gpu", lambda: gpu)
    c = typed(override, f"cache_dir={tmp_path}")
    assert run.host_reason(c.framework, job_spec(c, tmp_path)) == reason


def test_more_gpus_than_a_framework_takes_is_skipped_not_faked(monkeypatch, tmp_path):
    from bench.sweep import app as run

    monkeypatch.setattr(run, "host_has_gpu", lambda: True)
    c = typed("framework=unsloth", "train.num_gpus=2", f"cache_dir={tmp_path}")
    assert "the harness runs unsloth on one GPU" in run.host_reason(c.framework, job_spec(c, tmp_path))


def test_sweep_size_counts_command_line_over_sweeper_params():
    from bench.sweep.app import sweep_size

    c = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"params": {"framework": "trl"}},
                "overrides": {"task": ["train.lr=1e-4,2e-4", "train.seed=range(3)"]},
            }
        }
    )
    assert sweep_size(c) == 6


def test_offline_runner_python_and_site_per_framework_from_the_environment(monkeypatch):
    monkeypatch.setenv("SFTBENCH_LLAMAFACTORY_PYTHON", "/opt/py/bin/python")
    monkeypatch.setenv("SFTBENCH_LLAMAFACTORY_PYTHONPATH", "/opt/sites/llamafactory")
    lf, trl = cfg("framework=llamafactory").framework, cfg("framework=trl").framework
    assert lf.python == "/opt/py/bin/python" and lf.env.PYTHONPATH == "/opt/sites/llamafactory"
    assert trl.python is None and trl.env.PYTHONPATH == ""


def test_worker_env_keeps_the_inherited_pythonpath_when_the_framework_sets_none(monkeypatch, tmp_path):
    from bench.sweep.launch import worker_env

    monkeypatch.setenv("PYTHONPATH", "/tmp/site")
    assert worker_env(tmp_path, {"PYTHONPATH": ""})["PYTHONPATH"] == f"{tmp_path}:/tmp/site"
    assert worker_env(tmp_path, {"PYTHONPATH": "/opt/lf"})["PYTHONPATH"] == f"{tmp_path}:/opt/lf"


def test_run_directory_names_cannot_escape_the_sweep():
    from bench.core.results import safe_name

    assert safe_name("../../etc") == "_.._etc"
    assert "/" not in safe_name("a/b") and safe_name("trl") == "trl"


def test_medical_dataset_reads_a_local_copy(tmp_path, write_jsonl):
    finetune = tmp_path / "finetune"
    finetune.mkdir()
    for name in ("train_zh_0.json", "valid_zh_0.json"):
        (finetune / name).write_text('{"instruction": "q", "input": "", "output": "a"}\n', encoding="utf-8")
    spec = job_spec(typed("dataset=medical", f"dataset.path={finetune}"), tmp_path)
    assert [Path(f).name for f in spec.dataset.source_files] == ["train_zh_0.json"]
    assert (spec.dataset.max_rows, spec.dataset.shuffle_seed) == (2000, 42)


def test_medical_dataset_comes_from_the_hub_without_a_local_copy(tmp_path, monkeypatch):
    import huggingface_hub

    fetched = []

    def fake_download(repo_id, filename, repo_type):
        fetched.append((repo_id, filename, repo_type))
        path = tmp_path / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"instruction": "q", "input": "", "output": "a"}\n', encoding="utf-8")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    spec = job_spec(typed("dataset=medical"), tmp_path)
    assert fetched == [
        ("shibing624/medical", "finetune/train_zh_0.json", "dataset"),
        ("shibing624/medical", "finetune/valid_zh_0.json", "dataset"),
    ]
    names = ("train_zh_0.json", "valid_zh_0.json")
    assert (*spec.dataset.source_files, *spec.dataset.eval_source_files) == tuple(
        str(tmp_path / "finetune" / f) for f in names
    )


def test_a_data_file_changed_during_the_sweep_never_reaches_a_run_that_named_the_old_one(tmp_path, write_jsonl):
    """A run reads the selection made when its spec was: its job key and selection hash name the rows it trained
    and evaluated on, whatever happens to the source files meanwhile."""
    from bench.core.data import load_examples

    train = write_jsonl([{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(4)], "train.jsonl")
    held_out = write_jsonl([{"instruction": "held", "input": "", "output": "out"}], "valid.jsonl")
    c = typed(f"dataset.path={train}", f"dataset.eval_path={held_out}", f"cache_dir={tmp_path}")
    spec = job_spec(c, tmp_path)
    held_out.write_text(train.read_text(encoding="utf-8"), encoding="utf-8")  # replaced while the run trains
    assert [ex.output for ex in load_examples([spec.dataset.eval_file])] == ["out"]
    later = job_spec(c, tmp_path)  # a later run of the sweep selects from the new file, under its own job key
    assert [ex.output for ex in load_examples([later.dataset.eval_file])] == ["a0", "a1", "a2", "a3"]
    assert later.job_key() != spec.job_key() and later.dataset.selection_sha256 != spec.dataset.selection_sha256
    assert [ex.output for ex in load_examples([spec.dataset.eval_file])] == ["out"]  # the earlier selection stays


def test_unreachable_hub_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(UserError, match="download it once and set dataset.path"):
        job_spec(typed("dataset=medical"), tmp_path)


def test_the_slurm_launcher_group_is_composable():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        launcher = compose(
            config_name="config", overrides=["hydra/launcher=slurm"], return_hydra_config=True
        ).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_task, launcher.timeout_min) == ("gpu", 1, 120)


def test_data_parallel_runs_launch_the_worker_with_torchrun():
    from bench.sweep.launch import worker_command

    assert worker_command(Path("/env/bin/python"), Path("/r/spec.json")) == [
        "/env/bin/python",
        "-m",
        "bench.worker",
        "/r/spec.json",
    ]
    assert worker_command(Path("/env/bin/python"), Path("/r/spec.json"), num_gpus=2) == [
        "/env/bin/python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "bench.worker", "/r/spec.json",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("visible", "num_gpus", "pinned"),
    [
        (None, 1, "0"),  # the card torch would take anyway
        (None, 2, "0,1"),
        ("3,5,7", 2, "3,5"),  # a scheduler's allocation: the first N of it
        ("GPU-aaa,GPU-bbb", 1, "GPU-aaa"),
        ("", 1, ""),  # no GPU visible stays so
    ],
)
def test_a_run_is_pinned_to_its_gpus_in_pci_order(visible, num_gpus, pinned):
    from bench.sweep.launch import pin_gpus

    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert pin_gpus(env, num_gpus) == [d for d in pinned.split(",") if d]
    assert env == {"CUDA_VISIBLE_DEVICES": pinned, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_held_out_rows_that_are_training_rows_and_held_out_duplicates_are_counted(tmp_path):
    from bench.sweep.app import job_and_rows

    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(10)]
    data = tmp_path / "data"
    data.mkdir()
    (data / "train_zh_0.json").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    held_out = rows[:3] + [{"instruction": "new", "input": "", "output": "x"}] * 2  # 3 leaked, 1 repeated
    (data / "valid_zh_0.json").write_text("".join(json.dumps(r) + "\n" for r in held_out), encoding="utf-8")
    _, picked = job_and_rows(typed(f"dataset.path={data}", f"cache_dir={tmp_path}"), tmp_path)
    counts = {"rows": 5, "kept": 4, "duplicates": 1, "skipped": {}, "overlap_with_train": 3}
    assert dataclasses.asdict(picked.heldout) == counts


def test_a_preset_that_builds_its_model_never_takes_a_users_path(tmp_path):
    """The tiny preset builds in the cache: pointed at a user's directory it would have replaced its files."""
    mine = tmp_path / "my-model"
    mine.mkdir()
    (mine / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(UserError, match="model=tiny builds its model in the cache; model.path loads an existing"):
        job_spec(typed(f"model.path={mine}", f"cache_dir={tmp_path / 'cache'}"), tmp_path / "run")
    assert (mine / "model.safetensors").read_bytes() == b"weights"


def test_a_build_never_replaces_files_it_did_not_make(tmp_path):
    from bench.core.models import ensure_built

    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="did not build"):
        ensure_built(tmp_path / "stranger", {"seed": 0})
    assert (tmp_path / "stranger" / "config.json").exists()


def test_two_checkouts_sharing_a_cache_give_their_workers_their_own_code(tmp_path, monkeypatch):
    from bench.sweep import launch

    first = launch.worker_pythonpath(tmp_path)
    other = tmp_path / "other-checkout" / "bench"
    other.mkdir(parents=True)
    monkeypatch.setattr(launch, "PACKAGE_DIR", other)
    second = launch.worker_pythonpath(tmp_path)
    assert first != second
    assert (first / "bench").resolve() == Path(launch.__file__).resolve().parent.parent
    assert (second / "bench").resolve() == other.resolve()


@pytest.mark.parametrize("option", ["--index-url=https://elsewhere/simple", "-r /etc/passwd", "-e ."])
def test_a_pip_option_in_the_requirements_is_rejected(option):
    with pytest.raises(SpecError, match=r"framework.requirements: .* is a pip option; only requirement strings"):
        typed(f"framework.requirements=['trl==1.16.0','{option}']")


def reaches_pip(cfg) -> list[str]:
    """Every list of strings in the validated config whose items reach pip: found by putting a marker into
    each list and seeing which markers the environment's requirements carry (bench.sweep.app.framework_requirements)."""
    import dataclasses

    from bench.sweep.app import framework_requirements

    def lists(node, where=""):
        if dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):
                yield from lists(getattr(node, f.name), f"{where}{f.name}.")
        elif isinstance(node, dict):
            for k, v in node.items():
                yield from lists(v, f"{where}{k}.")
        elif isinstance(node, list) and all(isinstance(v, str) for v in node):
            node.append(f"marker-{where[:-1]}")
            yield where[:-1]

    keys = list(lists(cfg))
    pip = framework_requirements(cfg.framework, cfg.worker_requirements, "liger")
    return [k for k in keys if f"marker-{k}" in pip]


def test_every_config_list_that_reaches_pip_refuses_pip_options():
    """A new list that reaches pip without going through the validation fails here."""
    keys = reaches_pip(typed("framework=trl"))
    assert {"framework.requirements", "framework.companions.default", "worker_requirements"} <= set(keys)
    assert "framework.kernel_requirements.liger" in keys
    for key in keys:
        with pytest.raises(SpecError, match=rf"{key}: '-r /etc/passwd' is a pip option"):
            typed("framework=trl", f"{key}=['-r /etc/passwd']")


def test_paths_derived_from_config_values_stay_inside_the_cache(tmp_path):
    from bench.core.models import built_model_dir
    from bench.sweep import envs

    env = envs.env_dir(tmp_path, "trl", "../../x", ["trl"])
    model = built_model_dir("../../evil", {"seed": 0}, tmp_path)
    assert env.parent == tmp_path / "envs" and model.parent == tmp_path / "models"


def test_data_with_no_usable_row_stops_before_the_run_with_the_counts(tmp_path, write_jsonl):
    path = write_jsonl([{"instruction": "q", "input": "", "output": ""}] * 3 + [{"instruction": "q"}])
    with pytest.raises(DataError, match=rf"0 usable rows in {path}: 4 read, 0 duplicates, 3 field 'output' is "
                       r"empty, 1 field 'output' is missing"):  # fmt: skip
        job_spec(typed(f"dataset.path={path}", "dataset.on_bad_row=skip", f"cache_dir={tmp_path}"), tmp_path)
    with pytest.raises(DataError, match=rf"^{path}:1: field 'output' is empty"):  # the user's file, not a copy
        job_spec(typed(f"dataset.path={path}", f"cache_dir={tmp_path}"), tmp_path)


def test_a_row_above_the_size_bound_is_a_bad_row(tmp_path, write_jsonl):
    from bench.sweep.app import job_and_rows

    path = write_jsonl([{"instruction": "q", "input": "", "output": "a"}, {"instruction": "q", "output": "x" * 2000}])
    with pytest.raises(DataError, match=r"data.jsonl:2: row larger than dataset.max_row_bytes \(2,001 > 1,000 bytes\)"):
        job_spec(typed(f"dataset.path={path}", "dataset.max_row_bytes=1000", f"cache_dir={tmp_path}"), tmp_path)
    c = typed(f"dataset.path={path}", "dataset.max_row_bytes=1000", "dataset.on_bad_row=skip", f"cache_dir={tmp_path}")
    _, picked = job_and_rows(c, tmp_path)  # skipped and counted instead
    assert (picked.train.kept, picked.train.skipped) == (1, {"row larger than dataset.max_row_bytes": 1})


def test_the_default_sweep_is_every_registered_framework_with_the_baseline_first():
    from bench.core.config import frameworks, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        params = compose(config_name="config", return_hydra_config=True).hydra.sweeper.params
    names = params.framework.split(",")
    assert names[0] == "trl" and sorted(names) == sorted(frameworks())
