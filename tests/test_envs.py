"""Framework environments: built clean, checked before use, rebuilt when damaged, never half-used.

Built for real (venv + pip) from a local package with an in-tree build backend: no index is needed.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.sweep import envs
from tests.conftest import REPO, sigint_default

TINY = f"tinypkg @ file://{Path(__file__).parent / 'fixtures' / 'tinypkg'}"


def site_file(env: Path) -> Path:
    (found,) = env.glob("lib/python*/site-packages/tinypkg/__init__.py")
    return found


def test_a_damaged_environment_is_rebuilt_once_with_a_notice(tmp_path, monkeypatch):
    monkeypatch.setattr(envs, "VERIFIED", set())
    env = tmp_path / "envs" / "tiny-1.0-abc"
    python, built_s = envs.ensure_env(env, [TINY], expect={"tinypkg": "1.0"})
    assert built_s is not None and python.exists()
    assert envs.ensure_env(env, [TINY], expect={"tinypkg": "1.0"})[1] is None  # intact: used as is

    site_file(env).unlink()  # a package file deleted behind the harness's back
    envs.VERIFIED.clear()  # a later sweep
    notices = []
    _, rebuilt_s = envs.ensure_env(env, [TINY], expect={"tinypkg": "1.0"}, notice=notices.append)
    assert rebuilt_s is not None and site_file(env).exists()
    assert len(notices) == 1 and "is damaged (1 package files missing" in notices[0] and "rebuilding" in notices[0]


def test_a_package_at_another_version_than_pinned_is_damage(tmp_path, monkeypatch):
    monkeypatch.setattr(envs, "VERIFIED", set())
    env = tmp_path / "env"
    envs.ensure_env(env, [TINY])
    assert envs.damage(env, {"tinypkg": "1.0"}) is None
    assert envs.damage(env, {"tinypkg": "2.0"}) == "tinypkg is 1.0, expected 2.0"
    assert envs.damage(env, {"trl": "1.16.0"}) == "trl is not installed, expected 1.16.0"


def build_in_subprocess(env: Path, stderr: Path, **extra_env) -> subprocess.Popen:
    code = f"from pathlib import Path; from bench.sweep import envs; envs.ensure_env(Path({str(env)!r}), [{TINY!r}])"
    with open(stderr, "w") as err:
        return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
                                env=os.environ | extra_env, preexec_fn=sigint_default)  # fmt: skip


def wait_for_text(path: Path, text: str, limit_s: float = 600) -> None:
    """Until `path` holds `text` (a process reached that point): no race against a fixed sleep."""
    deadline = time.monotonic() + limit_s
    while not (path.exists() and text in path.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.2)


def others(env: Path, builder: subprocess.Popen) -> list[psutil.Process]:
    """Processes still working in `env` (pip and its build) besides the builder itself."""
    return [p for p in psutil.process_iter(["cmdline"])
            if str(env) in " ".join(p.info["cmdline"] or []) and p.pid != builder.pid]  # fmt: skip


def test_an_interrupted_build_stops_pip_and_is_rebuilt_next_time(tmp_path, monkeypatch):
    monkeypatch.setattr(envs, "VERIFIED", set())
    env = tmp_path / "env"
    builder = build_in_subprocess(env, tmp_path / "stderr", SFTBENCH_SLOW_BUILD="1")
    wait_for_text(env.with_name(env.name + ".build.log"), "Preparing metadata")  # pip is inside the slow build
    builder.send_signal(signal.SIGINT)  # Ctrl-C
    builder.wait(timeout=120)
    deadline = time.monotonic() + 60
    while others(env, builder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not others(env, builder), "pip left running"
    assert not (env / envs.COMPLETE).exists()
    _, built_s = envs.ensure_env(env, [TINY])  # half-built: rebuilt, never half-used
    assert built_s is not None and site_file(env).exists()


def test_a_build_in_progress_elsewhere_is_waited_for_with_a_notice(tmp_path):
    import fcntl

    env = tmp_path / "env"
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.with_name(env.name + ".lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as another sweep's build holds it
        builder = build_in_subprocess(env, tmp_path / "stderr")
        wait_for_text(tmp_path / "stderr", "waiting for a build of env in progress elsewhere")
        assert builder.poll() is None and not env.exists()  # waiting, not building
    assert builder.wait(timeout=600) == 0
    assert (env / envs.COMPLETE).exists()


def test_a_sweep_interrupted_while_building_records_the_run_and_stops_the_build(tmp_path):
    cache, results_dir = tmp_path / "cache", tmp_path / "results"
    cmd = [sys.executable, "-m", "bench.run", f"results_dir={results_dir}", f"cache_dir={cache}",
           f"hydra.searchpath=[file://{REPO}/tests/conf]", "framework=misbehave", "worker_requirements=[]",
           f"framework.requirements=['{TINY}']"]  # fmt: skip
    with open(tmp_path / "stderr", "w") as err:
        extra = {"SFTBENCH_SLOW_BUILD": "1", "SFTBENCH_TEST_REPO": str(REPO)}
        sweep = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=os.environ | extra)
    deadline = time.monotonic() + 600
    while not (logs := list(cache.glob("envs/*.build.log"))) or "Preparing metadata" not in logs[0].read_text():
        assert time.monotonic() < deadline and sweep.poll() is None, (tmp_path / "stderr").read_text()
        time.sleep(0.2)
    sweep.send_signal(signal.SIGTERM)
    assert sweep.wait(timeout=120) == 130
    stderr = (tmp_path / "stderr").read_text()
    assert "Traceback" not in stderr and "recorded as interrupted" in stderr
    (summary,) = results_dir.glob("*/*/summary.json")
    assert '"status": "interrupted"' in summary.read_text()
    assert "interrupted (SIGTERM) while building the environment" in summary.read_text()
    env = logs[0].with_name(logs[0].name.removesuffix(".build.log"))
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(env) in " ".join(p.info["cmdline"] or [])]


def test_a_build_whose_parent_is_killed_stops_too(tmp_path, monkeypatch):
    env = tmp_path / "env"
    builder = build_in_subprocess(env, tmp_path / "stderr", SFTBENCH_SLOW_BUILD="1")
    wait_for_text(env.with_name(env.name + ".build.log"), "Preparing metadata")
    builder.kill()  # SIGKILL: no handler runs in the builder
    builder.wait(timeout=60)
    deadline = time.monotonic() + 60
    while others(env, builder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not others(env, builder), "pip left running after its parent was killed"
    monkeypatch.setattr(envs, "VERIFIED", set())
    _, built_s = envs.ensure_env(env, [TINY])  # the next build is not blocked and not half-used
    assert built_s is not None and site_file(env).exists()


@pytest.mark.parametrize(
    "line, activity",
    [
        ("Collecting trl==1.16.0", "collecting trl==1.16.0"),
        ("  Downloading torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl (906.4 MB)",
         "downloading torch 2.13.0 (906.4 MB)"),
        ("  Downloading trl-1.16.0-py3-none-any.whl.metadata (11 kB)", "downloading trl 1.16.0 metadata (11 kB)"),
        ("  Using cached numpy-2.3.1-cp311-cp311-manylinux_2_28_x86_64.whl (16.9 MB)", "cached numpy 2.3.1 (16.9 MB)"),
        ("  Downloading https://files.example/fire-0.7.0.tar.gz (87 kB)", "downloading fire-0.7.0 (87 kB)"),
        ("Building wheel for fire (pyproject.toml): started", "building wheel for fire"),
        ("Installing collected packages: a, b, c, d, e", "installing 5 packages: a, b, c, d, ..."),
        ("Successfully installed a-1 b-2", "installed 2 packages"),
        ("building model: pre-training step 40/400", "pre-training step 40/400"),
        ("creating virtual environment /c/envs/trl", "creating virtual environment /c/envs/trl"),
        ("Requirement already satisfied: six in ./lib", None),
        ("  Attempting uninstall: x", None),
    ],
)  # fmt: skip
def test_pip_lines_become_the_builds_status(line, activity):
    assert envs.pip_activity(line) == activity


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_progress_prints_with_elapsed_time_at_most_every_interval():
    shown, clock = [], Clock()
    progress = envs.BuildProgress(shown.append, live=False, every_s=10, clock=clock)
    progress("Collecting trl==1.16.0")
    clock.now = 4
    progress("Collecting torch==2.13.0")  # within 10 s of the last line shown: held back
    progress("Requirement already satisfied: six")  # says nothing new
    clock.now = 75
    progress("  Downloading torch-2.13.0-cp311-cp311-linux_x86_64.whl (906.4 MB)")
    assert shown == ["collecting trl==1.16.0 [0:00]", "downloading torch 2.13.0 (906.4 MB) [1:15]"]


def test_live_progress_shows_every_step_and_leaves_the_clock_to_the_display():
    shown = []
    progress = envs.BuildProgress(shown.append, live=True, clock=Clock())
    for line in ("Collecting trl==1.16.0", "noise", "Collecting torch==2.13.0"):
        progress(line)
    assert shown == ["collecting trl==1.16.0", "collecting torch==2.13.0"]


def test_a_builds_size_on_disk_is_measured(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.so").write_bytes(b"x" * 2**20)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to("/usr/bin/python3")  # a link counts as itself, not its target
    assert 1.0 <= envs.dir_size_mb(tmp_path) < 1.01



def test_a_build_that_ran_out_of_disk_says_which_disk_and_how_much_is_free(tmp_path):
    from bench.core.results import mount_point
    from bench.sweep.envs import EnvError, run_step

    (tmp_path / "fake_pip.py").write_text(  # what pip prints when the disk fills under it, then more lines
        "import sys\nprint('ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device')"
        "\nfor i in range(40):\n    print('line', i)\nsys.exit(1)\n"
    )
    with open(tmp_path / "env.build.log", "w") as log, pytest.raises(EnvError) as e:
        run_step([sys.executable, "fake_pip"], log, lambda line: None, dict(os.environ, PYTHONPATH=str(tmp_path)),
                 "building trl-1.16.0")  # fmt: skip
    reason = str(e.value).splitlines()[0]  # what the run records as its reason
    assert reason.startswith(f"building trl-1.16.0 failed: no space left on {mount_point(tmp_path)} (")
    assert "MB free now); " in reason and "exited 1" in reason


def test_a_layered_build_is_a_moved_copy_of_its_base_with_the_distribution_replaced(tmp_path, monkeypatch):
    """tinypkg's source, changed, over an environment holding the unchanged one: the copy holds the change and
    names itself in its scripts; the base is untouched, its other files shared with the copy (hard links)."""
    import shutil

    monkeypatch.setattr(envs, "VERIFIED", set())
    base = tmp_path / "envs" / "tiny-1.0-base"
    envs.ensure_env(base, [TINY])
    changed = shutil.copytree(Path(__file__).parent / "fixtures" / "tinypkg", tmp_path / "tinypkg")
    backend = changed / "backend.py"
    backend.write_text(backend.read_text().replace('"VALUE = 1\\n"', '"VALUE = 2\\n"'))
    env = tmp_path / "envs" / "tiny-source-changed"
    lines = []
    python, built_s = envs.ensure_env(env, [f"tinypkg @ file://{changed}"], lines.append,
                                      layer=envs.Layer(base, "tinypkg"))  # fmt: skip
    assert built_s is not None and f"copying {base} as the base" in lines and "pip uninstall tinypkg" in lines

    def value(python) -> str:
        return subprocess.run([str(python), "-c", "import tinypkg; print(tinypkg.VALUE)"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip

    assert (value(python), value(envs.python_of(base))) == ("2", "1")
    pip_script = (env / "bin" / "pip").read_text()
    assert pip_script.startswith(f"#!{env}/bin/python") and str(base) not in (env / "pyvenv.cfg").read_text()
    assert (base / "bin" / "pip").read_text().startswith(f"#!{base}/bin/python")
    assert envs.damage(env, {"tinypkg": "1.0"}) is None and envs.damage(base, {"tinypkg": "1.0"}) is None
    (pip_init,) = base.glob("lib/python*/site-packages/pip/__init__.py")
    assert pip_init.samefile(env / pip_init.relative_to(base))  # pip, not replaced: one file for both
    assert not (base / "bin" / "pip").samefile(env / "bin" / "pip")
