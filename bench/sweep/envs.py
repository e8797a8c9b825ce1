"""Each framework's own Python environment: built on first use from the requirements in
conf/framework/<name>.yaml, cached under a key of that requirement set, reused afterwards.

Frameworks pin conflicting versions of transformers/trl/peft/datasets, so they never share an environment.
`framework.python=/path/to/python` skips all of this and uses a prepared interpreter (offline GPU runners).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.core.results import mount_point, safe_name

COMPLETE = ".complete"  # written last: an environment without it is half-built and gets rebuilt
VERIFIED: set[Path] = set()  # environments this process has checked (once per sweep, not once per run)


class EnvError(RuntimeError):
    """The framework's environment could not be built or used."""


@dataclass(frozen=True)
class Layer:
    """Build an environment as a copy of a built one (`base`) with `replace` (a distribution) uninstalled and
    the requirements installed over it: a framework's source over its release's environment takes seconds
    where a fresh build takes a minute or more, and it keeps every package the source accepts at the
    release environment's version, so commits differ in the framework's code, not in what pip resolved."""

    base: Path
    replace: str


def env_key(requirements: list[str], base_python: str) -> str:
    version = subprocess.run(
        [base_python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    payload = json.dumps({"python": version, "requirements": sorted(requirements)})
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def env_dir(root: Path, name: str, version: str, requirements: list[str], base_python: str = sys.executable) -> Path:
    return root / "envs" / safe_name(f"{name}-{version}-{env_key(requirements, base_python)}")


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def ensure_env(
    env: Path,
    requirements: list[str],
    on_line: Callable[[str], None] = lambda line: None,
    base_python: str = sys.executable,
    expect: dict[str, str] | None = None,
    notice: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
    layer: Layer | None = None,
) -> tuple[Path, float | None]:
    """The environment's interpreter, building it first if needed; also the build time (None when cached).

    A built environment is checked before use (`damage`: files missing, `expect`ed versions); a damaged one is
    rebuilt once, with a notice. A build already running elsewhere is waited for, with a notice. With a
    `layer`, the build starts from a copy of that built environment (see Layer).
    """
    if (env / COMPLETE).exists() and (env in VERIFIED or not damage(env, expect)):
        VERIFIED.add(env)
        return python_of(env), None
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.with_name(env.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            notice(f"waiting for a build of {env.name} in progress elsewhere")
            fcntl.flock(lock, fcntl.LOCK_EX)  # two sweeps building the same env wait for one another
        if (env / COMPLETE).exists():
            problem = damage(env, expect)
            if not problem:
                VERIFIED.add(env)
                return python_of(env), None
            notice(f"environment {env.name} is damaged ({problem}); rebuilding it")
            (env / COMPLETE).unlink()
        start = time.perf_counter()
        _build(env, requirements, on_line, base_python, lock.fileno(), layer)
        VERIFIED.add(env)
        return python_of(env), time.perf_counter() - start


DAMAGE_CHECK = """
import importlib.metadata as m, json, os, sys
missing = [str(d.locate_file(f)) for d in m.distributions() for f in (d.files or [])
           if not str(f).endswith(".pyc") and not os.path.exists(d.locate_file(f))]
versions = {p: m.version(p) for p in json.loads(sys.argv[1]) if any(True for _ in m.distributions(name=p))}
print(json.dumps({"missing": missing[:3], "n_missing": len(missing), "versions": versions}))
"""


def damage(env: Path, expect: dict[str, str] | None = None) -> str | None:
    """What is wrong with a built environment, or None: package files missing (every installed file is
    checked, as pip recorded them), or an expected package at another version than pinned."""
    try:
        proc = subprocess.run([str(python_of(env)), "-c", DAMAGE_CHECK, json.dumps(sorted(expect or {}))],
                              capture_output=True, text=True, timeout=120, env=build_environ())  # fmt: skip
        found = json.loads(proc.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return "its interpreter does not run"
    if found["n_missing"]:
        return f"{found['n_missing']} package files missing, e.g. {found['missing'][0]}"
    for package, version in (expect or {}).items():
        if found["versions"].get(package) != version:
            return f"{package} is {found['versions'].get(package, 'not installed')}, expected {version}"
    return None


def build_environ() -> dict[str, str]:
    """The parent's environment less what would point pip and the new venv at the parent's packages: with
    the parent's PYTHONPATH, pip sees them as installed, skips them, and the environment is left broken."""
    leaks = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "VIRTUAL_ENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX")
    return {k: v for k, v in os.environ.items() if k not in leaks} | {"PYTHONNOUSERSITE": "1"}


def installed_versions(python: Path, packages: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of `packages` in an interpreter's environment (for runs whose worker never reported)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    try:
        proc = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, timeout=60)
        return json.loads(proc.stdout) if proc.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return {}


def pip_activity(line: str) -> str | None:
    """What a build is doing, from one line of its output (pip's "Collecting X", "Downloading F (size)",
    "Installing collected packages: ..." and kin, the harness's own step lines); None for a line that
    says nothing new."""
    line = line.strip()
    if line.startswith("building model: "):  # bench.core.models.say
        return line.removeprefix("building model: ")
    if line.startswith(("creating ", "copying ", "pip install ", "pip uninstall ", "waiting ")):  # the harness's
        return line
    if m := re.match(r"Collecting (\S+)", line):
        return f"collecting {m[1]}"
    if m := re.match(r"(Downloading|Using cached) (\S+?)(\.metadata)?(?: \((.+)\))?$", line):
        name = _distribution(m[2])
        verb = "downloading" if m[1] == "Downloading" else "cached"
        return f"{verb} {name}{' metadata' if m[3] else ''}{f' ({m[4]})' if m[4] else ''}"
    if m := re.match(r"Building wheels? for (\S+)", line):
        return f"building wheel for {m[1]}"
    if m := re.match(r"Installing collected packages: (.+)", line):
        names = [n.strip() for n in m[1].split(",")]
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        return f"installing {len(names)} packages: {shown}"
    if m := re.match(r"Successfully installed (.+)", line):
        return f"installed {len(m[1].split())} packages"
    return None


def _distribution(filename: str) -> str:
    """`torch 2.13.0` from a wheel or sdist file name (or a URL to one)."""
    name = filename.rsplit("/", 1)[-1]
    if name.endswith(".whl"):
        return " ".join(name.split("-")[:2])
    return re.sub(r"\.(tar\.gz|zip)$", "", name)


class BuildProgress:
    """A build's output lines turned into one status: what is being installed and, in plain mode (a log, not
    a terminal), for how long, shown at most once every `every_s` seconds. A live display shows its own clock."""

    def __init__(self, show: Callable[[str], None], live: bool, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.show, self.live, self.every_s, self.clock = show, live, every_s, clock
        self.start = clock()
        self.shown_at: float | None = None
        self.activity = ""

    def __call__(self, line: str) -> None:
        activity = pip_activity(line)
        if activity is None:
            return
        self.activity = activity
        now = self.clock()
        if self.live:
            self.show(activity)
        elif self.shown_at is None or now - self.shown_at >= self.every_s:
            self.shown_at = now
            self.show(f"{activity} [{elapsed(now - self.start)}]")


def elapsed(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    return f"{minutes}:{s:02d}"


def dir_size_mb(path: Path) -> float:
    """Bytes under `path` (files, not following links), in MiB: what a build left on disk."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total / 2**20


# Runs a module (`venv`, `pip`) like `python -m`, stopping its whole process group if the harness that
# started it disappears (SIGKILL leaves the harness no chance to stop it).
GUARD = """
import os, runpy, signal, sys, threading, time
parent = int(sys.argv.pop(1))
def watch():
    while True:
        try:
            os.kill(parent, 0)
        except OSError:
            os.killpg(0, signal.SIGKILL)
        time.sleep(0.5)
threading.Thread(target=watch, daemon=True).start()
sys.argv.pop(0)
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _build(env: Path, requirements: list[str], on_line: Callable[[str], None], base_python: str,
           lock_fd: int | None = None, layer: Layer | None = None) -> None:  # fmt: skip
    """venv + pip install (or, with a layer, a copy of its base, the replaced distribution uninstalled, then pip
    install), each in its own process group, stopped with it when the build is interrupted. The build's lock
    goes to each step too: a step that outlives a killed parent still holds it, so the next build waits for it
    rather than clearing the environment under it."""
    log_path = build_log(env)
    python = str(python_of(env))
    pip = [python, "pip", "install", "--progress-bar", "off", *requirements]
    steps = [(f"pip install {' '.join(requirements)}", pip)]
    if layer is None:
        steps.insert(0, (f"creating virtual environment {env}", [base_python, "venv", "--clear", str(env)]))
    else:
        steps.insert(0, (f"pip uninstall {layer.replace}", [python, "pip", "uninstall", "--yes", layer.replace]))
    with open(log_path, "w", encoding="utf-8", buffering=1) as log:  # line-buffered: a user can follow it
        if layer is not None:
            on_line(f"copying {layer.base} as the base")
            log.write(f"copying {layer.base} as the base\n")
            copy_env(layer.base, env)
        for what, cmd in steps:
            on_line(what)
            run_step(cmd, log, on_line, build_environ(), f"building {env.name}", lock_fd)
    freeze = subprocess.run(
        [str(python_of(env)), "-m", "pip", "freeze"], capture_output=True, text=True, env=build_environ()
    )
    (env / COMPLETE).write_text(freeze.stdout, encoding="utf-8")


def copy_env(base: Path, env: Path) -> None:
    """A copy of a built environment at `env`, moved there: its scripts and pyvenv.cfg name `env`, not `base`
    (a venv writes its own path into its console scripts' first lines and its activate scripts).

    Its files are hard links to the base's where the filesystem allows: a copy then takes seconds and almost no
    disk however many commits a bisect builds. Nothing writes into an installed file in place (pip removes and
    writes whole files, Python replaces a .pyc atomically), and the files rewritten here are written anew, so
    the base never changes under its copies."""
    if env.exists():
        shutil.rmtree(env)
    shutil.copytree(base, env, symlinks=True, ignore=shutil.ignore_patterns(COMPLETE), copy_function=link_or_copy)
    old, new = str(base).encode(), str(env).encode()
    for path in [env / "pyvenv.cfg", *(env / "bin").iterdir()]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data and b"\0" not in data:  # text that names the base: a script, a config
            rewritten = path.with_name(path.name + ".moved")
            rewritten.write_bytes(data.replace(old, new))
            shutil.copymode(path, rewritten)
            os.replace(rewritten, path)  # a new file: the base's, linked here, stays as it was


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(src, dst)


def build_log(env: Path) -> Path:
    return env.with_name(env.name + ".build.log")


def run_step(cmd: list[str], log, on_line: Callable[[str], None], environ: dict[str, str], what: str,
             lock_fd: int | None = None) -> None:  # fmt: skip
    """Run `cmd` = [python, module, args...] like `python -m`, in its own process group (stopped with the
    harness, or when the step is interrupted), its output line by line into `log` and `on_line`; an
    EnvError naming `what`, the log and its last lines when it fails."""
    tail: deque[str] = deque(maxlen=30)
    disk_full = False  # pip's own words for ENOSPC, anywhere in the output (not only in the tail)
    python, *module = cmd
    # Unbuffered: a piped Python's print() output otherwise arrives in 8 KB blocks, long after it happened.
    proc = subprocess.Popen(
        [python, "-c", GUARD, str(os.getpid()), *module], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=environ | {"PYTHONUNBUFFERED": "1"}, start_new_session=True,
        pass_fds=() if lock_fd is None else (lock_fd,),
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            log.write(line)
            line = line.rstrip()
            disk_full = disk_full or "No space left on device" in line
            if line and "is ignored: it is neither a file nor a directory" not in line:
                tail.append(line)
                on_line(line)
        returncode = proc.wait()
    except BaseException:  # Ctrl-C, SIGTERM: the step goes with the build
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if returncode != 0:
        cause = ""
        if disk_full:
            where = mount_point(Path(log.name))
            cause = f"no space left on {where} ({shutil.disk_usage(where).free / 2**20:,.0f} MB free now); "
        raise EnvError(f"{what} failed: {cause}{' '.join(map(str, cmd[:3]))} exited {returncode}; log: {log.name}\n"
                       + "\n".join(tail))  # fmt: skip


def check_python(python: str) -> Path:
    """A user-given interpreter for `framework.python`, checked to exist and run."""
    found = shutil.which(str(Path(python).expanduser()))
    if found is None:
        raise EnvError(f"framework.python={python}: no such interpreter")
    path = Path(found)
    with contextlib.suppress(OSError):
        if subprocess.run([str(path), "-c", "pass"], capture_output=True).returncode == 0:
            return path
    raise EnvError(f"framework.python={python}: interpreter does not run")
