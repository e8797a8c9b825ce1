import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import bench.sweep.app
from bench.core import config
from bench.sweep import envs, launch
from tests.conftest import REPO


def default_cfg(name: str) -> config.Config:
    """A default run of framework `name`, as bench.run composes and validates it."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return config.validate(compose(config_name="config", overrides=[f"framework={name}"]))


def framework_env(name: str) -> tuple[Path, list[str], dict[str, str] | None]:
    """Where a default run of `name` builds its environment, from what, and the version it checks
    (bench.sweep.app.framework_env: the same cache, requirements and key as a run)."""
    return bench.sweep.app.framework_env(default_cfg(name))


def model_build(name: str) -> tuple[list[str], dict[str, str]] | None:
    """How a default run of `name` builds the default model in its environment (bench.sweep.app.build_model):
    the command's arguments after the interpreter, and the worker's environment; None when it is built."""
    cfg = default_cfg(name)
    model = bench.sweep.app.model_spec(cfg)
    if (Path(model.path) / ".complete").exists():
        return None
    env = launch.worker_env(launch.worker_pythonpath(cfg.cache_path), cfg.framework.env)
    return ["bench.core.models", model.path, json.dumps(model.config)], env


def build_model(python: Path, args: list[str], env: dict[str, str]) -> None:
    """The model_build command, run as bench.sweep.app.build_model runs it, quietly. Its output is not kept: a
    run that waits for it writes the model's build log, and a failed build is the next run's to redo and tell."""
    Path(args[1]).parent.mkdir(parents=True, exist_ok=True)
    with open(os.devnull, "w") as log:
        envs.run_step([str(python), *args], log, lambda line: None, env, "building the model")


INTERRUPTED = threading.Event()


def pytest_keyboard_interrupt(excinfo):
    INTERRUPTED.set()  # Ctrl-C: do not wait for background builds (their steps stop with this process)


def build_quietly(env: Path, requirements: list[str], expect: dict[str, str] | None) -> Path | None:
    """An environment built as a run builds it (framework_env's answer), its interpreter; None when the build
    failed (left to the test that needs it, which builds it again and reports why)."""
    if (env / envs.COMPLETE).exists():
        return envs.python_of(env)  # built: its check is left to the run that uses it
    try:
        return envs.ensure_env(env, requirements, expect=expect, notice=lambda message: None)[0]
    except Exception:  # noqa: BLE001 - the test that needs it rebuilds it and says why
        return None


def build_in_background(session) -> list[threading.Thread]:
    """From an empty cache, build every CPU framework's environment in background threads, as a run would
    build it, instead of queueing each build behind the test that first needs it. TRL's comes first, then
    the default model in it, as the first integration tests need both: from an empty cache on a 2-core
    machine they were ready 3.5 minutes into the session, beside the quick tests (the model alone took 3.4
    minutes when it built beside all three environments). LLaMA-Factory's and Axolotl's then build at once
    (290 s one after another, 153 s at once). A run that needs an environment or
    the model still being built waits for it on its lock (bench.sweep.envs.ensure_env,
    bench.core.models.ensure_built) rather than building it twice. Only for a session of several integration
    modules: a single test file builds what it uses on first use, as before. A failed background build is
    left to the test that needs it, which builds it again and reports why. Returns the threads started."""
    modules = {item.path for item in session.items if item.get_closest_marker("integration")}
    cpu = [name for name, facts in config.frameworks().items() if not facts["needs_gpu"]]
    if len(modules) < 2 or "trl" not in cpu:
        return []
    # Composed here, in the main thread: Hydra's compose API is global, and a test may be composing.
    builds = {name: framework_env(name) for name in cpu}
    model = model_build("trl")
    threads: list[threading.Thread] = []

    def build_all():
        python = build_quietly(*builds.pop("trl"))
        if python is not None and model is not None and not INTERRUPTED.is_set():
            with contextlib.suppress(Exception):  # the first run that needs the model builds it and says why
                build_model(python, *model)
        others = [threading.Thread(target=build_quietly, args=build, name=f"build {build[0].name}", daemon=True)
                  for build in builds.values() if not INTERRUPTED.is_set()]  # fmt: skip
        for thread in others:
            thread.start()
        threads.extend(others)

    threads.append(threading.Thread(target=build_all, name="build trl, the model, then the others", daemon=True))
    threads[0].start()
    return threads


def join_builds(threads: list[threading.Thread]) -> None:
    """Wait for the background builds: a session that did not need them all leaves none half-built."""
    while threads and not INTERRUPTED.is_set():
        threads.pop(0).join()  # the first thread adds the others before it ends


@pytest.fixture(scope="session")
def trl_python() -> Path:
    """The default TRL environment's interpreter, built on first use like a run would."""
    env, requirements, expect = framework_env("trl")
    python, _ = envs.ensure_env(env, requirements, expect=expect)
    return python


# Runs snippets sent on stdin, each as a JSON string on one line, in a fresh namespace; answers each with a
# JSON line of its stdout and the traceback it raised (empty when none).
SNIPPETS = """
import contextlib, io, json, sys, traceback
for line in sys.stdin:
    out, error = io.StringIO(), ""
    with contextlib.redirect_stdout(out):
        try:
            exec(json.loads(line), {"__name__": "__snippet__"})
        except BaseException:
            error = traceback.format_exc()
    print(json.dumps([out.getvalue(), error]), flush=True)
"""


@pytest.fixture(scope="module")
def in_trl_env(trl_python):
    """Run a Python snippet in the TRL environment with the repo importable; returns its stdout. One
    interpreter serves a module's snippets, each in a namespace of its own: torch, transformers and peft are
    imported once, not once a snippet."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([str(trl_python), "-c", SNIPPETS], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip

    def run(code: str) -> str:
        proc.stdin.write(json.dumps(code) + "\n")
        proc.stdin.flush()
        answer = proc.stdout.readline()
        assert answer, f"the snippet interpreter ended (exit {proc.wait()})"
        out, error = json.loads(answer)
        assert not error, error[-3000:]
        return out

    yield run
    proc.stdin.close()
    proc.wait()


@pytest.fixture(scope="session")
def gpu_bench_rehearsal(tmp_path_factory, trl_python) -> tuple[Path, str]:
    """scripts/gpu_bench.sh rehearsed on a CPU (tiny model, few steps): its output directory and stdout. Its
    first step is benchmarks/overhead.py in its smallest size, which tests/integration/test_overhead.py reads
    too: one benchmark run serves both."""
    import sys

    out = tmp_path_factory.mktemp("gpu-bench") / "bench"
    proc = subprocess.run([str(REPO / "scripts" / "gpu_bench.sh"), sys.executable, "--rehearse", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


@pytest.fixture(scope="session")
def main_job(tmp_path_factory):
    """The README's main command as written (every registered framework on the embedded default), its runs
    short: 8 steps of a seeded selection of 120 rows, no held-out evaluation. One sweep read by the README's
    test, by parity and by Unsloth's skip on a CPU. Returns (its results_dir, the process)."""
    from tests.conftest import readme_commands, run_readme

    (command,) = [c for c, _ in readme_commands("## Set up") if "bench.run" in c]
    tmp = tmp_path_factory.mktemp("main_job")
    proc = run_readme(command.split("&& ")[-1].removeprefix(".venv/bin/"), "train.max_steps=8", "eval.enabled=false",
                      "dataset.max_rows=120", "dataset.shuffle_seed=5", f"results_dir={tmp}")  # fmt: skip
    return tmp, proc


@pytest.fixture(scope="session")
def truncated(tmp_path_factory):
    """TRL, LLaMA-Factory and Axolotl at a max length that cuts answers, each tokenizing the rows itself and
    then tokenized once by the harness: 3 steps of each. One sweep read by the LLaMA-Factory and Axolotl tests
    of how each truncates. Returns (its results_dir, the process)."""
    from tests.conftest import bench_run

    tmp = tmp_path_factory.mktemp("truncated")
    proc = bench_run(tmp, "framework=trl,llamafactory,axolotl", "dataset.tokenize=framework,harness",
                     "train.max_seq_len=64", "train.max_steps=3")  # fmt: skip
    return tmp, proc


# Fixed names and dates: the same tree committed the same way is the same commit in every test, so a source
# environment built for it (keyed by its commit) is built once for the session.
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}  # fmt: skip


def git(path, *args) -> str:
    proc = subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, text=True,
                          env=os.environ | GIT_ENV)  # fmt: skip
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def trl_repo(tmp_path_factory):
    """TRL's sdist of the release conf/framework/trl.yaml pins, unpacked and committed as a repository's main."""
    import tarfile

    from omegaconf import OmegaConf

    tmp = tmp_path_factory.mktemp("trl")
    version = OmegaConf.load(REPO / "conf" / "framework" / "trl.yaml").version
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    f"trl=={version}", "-d", str(tmp)], check=True)  # fmt: skip
    (sdist,) = tmp.glob("trl-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp, filter="data")
    repo = tmp / f"trl-{version}"
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the release")
    return repo


def slowed_trainer(seconds: float) -> str:
    """Code appended to TRL's trainer module: every training step sleeps `seconds` first (a regression)."""
    return f"""
import time as _sftbench_time
_sftbench_training_step = SFTTrainer.training_step
def _sftbench_slow_step(self, *args, **kwargs):
    _sftbench_time.sleep({seconds})
    return _sftbench_training_step(self, *args, **kwargs)
SFTTrainer.training_step = _sftbench_slow_step
"""
