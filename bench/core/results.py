"""The layout of a run directory and the only way files get written there (atomically).

Standard library only: both the parent and the worker use it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.core.errors import UserError

SPEC = "spec.json"  # the job spec the worker ran
CONFIG = "config.yaml"  # the resolved Hydra config
EVENTS = "events.jsonl"  # one line per optimizer step, written by the worker
SAMPLES = "samples.jsonl"  # resource samples of the worker's process tree, written by the parent
WORKER = "worker.json"  # what the worker reports about itself
SUMMARY = "summary.json"  # the run's outcome; present only once the run has finished
WORKER_LOG = "worker.log"  # the worker's stdout and stderr
GENERATIONS = "generations.jsonl"  # held-out prompts, reference answers and the trained model's answers
BASE_GENERATIONS = "base_generations.jsonl"  # the same for the base model (the sweep's first run)
FRONTIER = "frontier.json"  # a memory-frontier search's result, in its job directory (bench.frontier)
LOCK = ".lock"  # held by the process writing the run directory, and by its worker
RUN_FILES = (SPEC, CONFIG, EVENTS, SAMPLES, WORKER, SUMMARY, WORKER_LOG, GENERATIONS, BASE_GENERATIONS)


SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE|CREDENTIAL", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(?<=://)([^\s:/@]+):([^\s@/]+)@")  # user:password@ in any URL
URL_TOKEN = re.compile(r"(?<=https://)[^\s:/@]+@|(?<=http://)[^\s:/@]+@")  # a token alone (https://TOKEN@host)
RUN_SECRETS: dict[str, str] = {}  # secret-named values a run hands its worker (framework.env), not in os.environ


def safe_name(value: Any) -> str:
    """A path component from a config value: no separators, no leading dots (no `framework.version=../x`)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(value)).lstrip(".") or "_"


def register_secrets(env: Mapping[str, Any]) -> None:
    """Secret-named values the run passes to its worker (framework.env): scrubbed like the environment's."""
    RUN_SECRETS.update({k: str(v) for k, v in env.items() if v is not None and SECRET_NAME.search(k)})


# The ways a string is escaped on its way into a file, each as the text between its quotes: JSON (ASCII-only or
# not), Python's repr (an exception's message quoting a value) and CSV (quotes doubled).
ENCODINGS = (
    lambda v: json.dumps(v)[1:-1],
    lambda v: json.dumps(v, ensure_ascii=False)[1:-1],
    lambda v: repr(v)[1:-1],
    lambda v: v.replace('"', '""'),
)


def encoded_forms(value: str, depth: int = 3) -> set[str]:
    """`value` as is and through every composition of up to `depth` encodings: a repr inside JSON is an
    exception's message quoting the value, written into summary.json; inside JSON again, in a log line."""
    forms = {value}
    for _ in range(depth):
        forms |= {encode(f) for f in forms for encode in ENCODINGS}
    return forms


def secret_forms(environ: Mapping[str, str]) -> list[str]:
    """Every form a secret value can take in a file: as is and escaped (encoded_forms), and each long line of
    a multi-line one (a private key printed line by line)."""
    values = [v for k, v in {**environ, **RUN_SECRETS}.items() if SECRET_NAME.search(k) and len(v) >= 6]
    forms = set()
    for v in values:
        forms |= encoded_forms(v)
        forms |= {line.strip() for line in v.splitlines() if len(line.strip()) >= 16}
    return sorted(forms, key=len, reverse=True)  # longest first: a value never half-replaced by its part


def redact(text: str, environ: Mapping[str, str] = os.environ) -> str:
    """`text` with secrets replaced by ***: values of secret-named variables (HF_TOKEN, SSH_PRIVATE_KEY, ...)
    of the environment and of the run's framework.env, in every escaped form, and passwords in URLs."""
    return scrub(text, secret_forms(environ))


def scrub(text: str, forms: list[str]) -> str:
    """`text` with the given secret forms (secret_forms) and passwords in URLs replaced by ***."""
    for form in forms:
        text = text.replace(form, "***")
    return URL_TOKEN.sub("***@", URL_PASSWORD.sub(r"\1:***@", text))


class DiskFull(UserError):
    """A results file could not be written for lack of space: the sweep ends with one line."""


def mount_point(path: Path) -> Path:
    """The file system's mount point under `path` (what a user frees space on)."""
    p = path.resolve()
    while not p.exists():
        p = p.parent
    dev = p.stat().st_dev
    while p != p.parent and p.parent.stat().st_dev == dev:
        p = p.parent
    return p


def existing(path: Path) -> Path:
    """`path`, or the nearest of its parents that exists (where a directory about to be made would go)."""
    p = path.absolute()
    while not p.exists():
        p = p.parent
    return p


def unwritable(path: Path, low_bytes: int) -> str | None:
    """Why results cannot be written under `path` (read-only, full), in words; None when they can."""
    where = existing(path)
    if not os.access(where, os.W_OK):
        return f"{where} is not writable (read-only file system or no permission); choose another results_dir"
    st = os.statvfs(where)
    if st.f_bavail * st.f_frsize < low_bytes:
        return f"no space left on {mount_point(where)} for results under {path}"
    return None


def no_space(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


def cannot_write(error: OSError, path: Path) -> UserError | None:
    """A write that failed because of the disk (full, over quota, read-only) as one line naming it; None for
    other failures."""
    if no_space(error):
        return DiskFull(f"no space left on {mount_point(path)} writing {path}")
    if error.errno == errno.EROFS:
        return UserError(f"{mount_point(path)} is read-only: cannot write {path}")
    return None


@contextlib.contextmanager
def atomic_path(path: Path):
    """A temporary name in the same directory to write to, renamed to `path` once written: readers never see
    half a file, and a failed write (a full disk) leaves neither a temporary file nor a damaged `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):  # on a read-only file system there is nothing to remove
            tmp.unlink(missing_ok=True)
        if (error := cannot_write(e, path)) is not None:
            raise error from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write atomically (atomic_path). Secrets from the environment never reach a results file."""
    with atomic_path(path) as tmp:
        tmp.write_text(redact(text), encoding="utf-8")


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing, half-written or not an object (a run that died)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file; a last line cut short by a killed writer is ignored."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def run_dirs(sweep_dir: Path) -> list[Path]:
    """A sweep's run directories in run order (`10-trl` after `2-trl`), hidden ones left out."""

    def order(p: Path) -> tuple[int, str]:
        head = p.name.split("-", 1)[0]
        return (int(head) if head.isdigit() else 1 << 30, p.name)

    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=order)


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold the run directory for this process (the worker inherits the descriptor, so a worker that outlives
    its parent still holds it): a second writer, such as an immediate resume, is refused with one line."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise (cannot_write(e, run_dir / LOCK) or e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(
            f"{run_dir}: another process is writing this run (a sweep or its worker still running); "
            "wait for it to end, or choose another hydra.sweep.dir"
        ) from None
    try:
        yield fd
    finally:
        os.close(fd)


def clear_run(run_dir: Path) -> None:
    """Remove what an earlier attempt of this run wrote, so events and samples never mix two attempts."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
