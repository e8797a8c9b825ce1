import subprocess
import threading
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import bench.sweep.app
from bench.core import config
from bench.sweep import envs
from tests.conftest import REPO


def framework_env(name: str) -> tuple[Path, list[str], dict[str, str] | None]:
    """Where a default run of `name` builds its environment, from what, and the version it checks
    (bench.sweep.app.framework_env: the same cache, requirements and key as a run)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = config.validate(compose(config_name="config", overrides=[f"framework={name}"]))
    return bench.sweep.app.framework_env(cfg)


INTERRUPTED = threading.Event()


def pytest_keyboard_interrupt(excinfo):
    INTERRUPTED.set()  # Ctrl-C: do not wait for background builds (their steps stop with this process)


@pytest.fixture(scope="session", autouse=True)
def framework_envs_building(request):
    """From an empty cache, start building every CPU framework's environment at once, in background threads,
    as a run would build it: the builds overlap instead of queueing behind the test that first needs each one
    (TRL, LLaMA-Factory and Axolotl on a 2-core machine: 290 s one after another, 153 s at once). A run
    that needs an environment still being built waits for it on the build's lock (bench.sweep.envs.ensure_env)
    rather than building it twice. Only for a session of several integration modules: a single test file
    builds what it uses on first use, as before. A failed background build is left to the test that needs
    the environment, which builds it again and reports why."""
    modules = {item.path for item in request.session.items if Path(__file__).parent in item.path.parents}
    threads = []
    if len(modules) > 1:
        for name, facts in config.frameworks().items():
            if facts["needs_gpu"]:
                continue
            env, requirements, expect = framework_env(name)
            if (env / envs.COMPLETE).exists():
                continue

            def build(env=env, requirements=requirements, expect=expect):
                try:
                    envs.ensure_env(env, requirements, expect=expect, notice=lambda message: None)
                except Exception:  # noqa: BLE001 - the test that needs it rebuilds it and says why
                    pass

            threads.append(threading.Thread(target=build, name=f"build {env.name}", daemon=True))
    for thread in threads:
        thread.start()
    yield [t.name for t in threads]
    for thread in threads:
        if not INTERRUPTED.is_set():
            thread.join()  # a session that did not need them all leaves none half-built


@pytest.fixture(scope="session")
def trl_python() -> Path:
    """The default TRL environment's interpreter, built on first use like a run would."""
    env, requirements, expect = framework_env("trl")
    python, _ = envs.ensure_env(env, requirements, expect=expect)
    return python


@pytest.fixture
def in_trl_env(trl_python):
    """Run a Python snippet in the TRL environment with the repo importable; returns its stdout."""

    def run(code: str) -> str:
        proc = subprocess.run(
            [str(trl_python), "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    return run


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
