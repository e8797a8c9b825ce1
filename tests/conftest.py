from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench.core import record, results
from bench.core.spec import DatasetSpec, EvalSpec, JobSpec, ModelSpec, TrainSpec, from_mapping

REPO = Path(__file__).resolve().parent.parent

# conf/ is the only source of defaults: the spec's own types carry none.
DEFAULT_TRAIN = from_mapping(TrainSpec, OmegaConf.to_container(OmegaConf.load(REPO / "conf/train/default.yaml")), "")
DEFAULT_EVAL = from_mapping(EvalSpec, OmegaConf.to_container(OmegaConf.load(REPO / "conf/config.yaml").eval), "eval")

DEFAULT_DATASET = DatasetSpec(name="d", train_file="/cache/data/selections/0/train.jsonl", eval_file=None,
                              selection_sha256="0" * 64, source_files=("/data/train.json",), eval_source_files=(),
                              source_sha256=("1" * 64,), system_prompt="You are Qwen.", max_rows=None,
                              tokenize="framework", on_bad_row="error", shuffle_seed=None, fill_to=None,
                              max_row_bytes=1_000_000, prompt_format="chat", eos=False)  # fmt: skip


def make_spec(dataset: dict | None = None, **train) -> JobSpec:
    """A valid spec with the default training values; `train` and `dataset` fields replaced as given."""
    return JobSpec(
        framework="trl",
        framework_version="1.16.0",
        runner="bench.worker.runners.trl",
        packages=("trl",),
        model=ModelSpec(name="tiny", source="random", path="/cache/tiny", config={"hidden_size": 64},
                        trust_remote_code=False),  # fmt: skip
        dataset=dataclasses.replace(DEFAULT_DATASET, **(dataset or {})),
        train=dataclasses.replace(DEFAULT_TRAIN, **train),
        eval=DEFAULT_EVAL,
        skip_steps=3,
        run_dir="/results/s/0-trl",
    )


def bench_run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """Run the sweep CLI with results under tmp_path (the env/model cache is the user's, shared)."""
    return subprocess.run(
        [sys.executable, "-m", "bench.run", f"results_dir={tmp_path}", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        env=os.environ | {"COLUMNS": "200"},
    )


def readme_commands(heading: str) -> list[tuple[str, str]]:
    """(command, its comment) of each line of the README's first code block after `heading`."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split(heading, 1)[1].split("```")[1]
    return [tuple(part.strip() for part in (line.split("  #", 1) + [""])[:2]) for line in block.strip().splitlines()]


def run_readme(command: str, *extra: str, paths: dict | None = None) -> subprocess.CompletedProcess:
    """A README command as written, its placeholders (`results/<sweep>`) replaced by `paths` (by the name in
    brackets), `extra` after it."""
    import shlex

    for name, path in (paths or {}).items():
        command = command.replace(f"results/<{name}>", str(path))
    argv = shlex.split(command)
    assert argv[0] in ("python", "python3"), command
    return subprocess.run([sys.executable, *argv[1:], *extra], cwd=REPO, capture_output=True, text=True,
                          timeout=1800, env=os.environ | {"COLUMNS": "200"})  # fmt: skip


def run_dirs(tmp_path: Path) -> list[Path]:
    """Every run that started, in every sweep under tmp_path."""
    sweeps = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    return [r for sweep in sweeps for r in results.run_dirs(sweep) if (r / results.SPEC).exists()]


def sigint_default() -> None:
    """preexec_fn for a child a test will Ctrl-C: a shell starts background jobs with SIGINT ignored, and a
    Python started that way keeps ignoring it (no KeyboardInterrupt), so restore the default first."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def write_jsonl(tmp_path):
    """Write rows as JSON Lines to a file under tmp_path and return its path."""

    def write(rows, name="data.jsonl"):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path

    return write


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB file system (tmpfs) to fill: writes there fail with ENOSPC like on a full disk."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def pytest_collection_modifyitems(config, items):
    """The quick tests first: they fail fast, and one pytest process leaves the other core to the integration
    tests' environment builds (framework_envs_building)."""
    items.sort(key=lambda item: item.get_closest_marker("integration") is not None)  # stable: file order kept


@pytest.fixture(scope="session", autouse=True)
def framework_envs_building(request):
    """Environments the session's integration tests use, built in the background from its start
    (tests.integration.conftest.build_in_background): while the quick tests run, not after them."""
    from tests.integration.conftest import build_in_background, join_builds

    threads = build_in_background(request.session)
    yield [t.name for t in threads]
    join_builds(threads)


@pytest.fixture(scope="session", autouse=True)
def busy_machine():
    """SFTBENCH_BURN_CPUS=N keeps N cores busy for the whole test session (N processes spinning), to prove
    that no test depends on the machine's speed: the suite must pass as it does on an idle machine."""
    import multiprocessing
    import os

    n = int(os.environ.get("SFTBENCH_BURN_CPUS", "0"))
    burners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]
    for p in burners:
        p.start()
    yield n
    for p in burners:
        p.terminate()
        p.join()


def _spin() -> None:
    while True:
        pass


def as_summary(data: dict):
    """A summary.json as a dict, read as the record bench.core.record reads from disk (every field checked)."""
    from bench.core import record

    return record.parse(record.Summary, {"run": "0", "status": "ok", **data}, Path("summary.json"), "test")


def as_run(data: dict, events=(), run_dir: Path | None = None):
    """A run as bench.core.record loads it, from a summary dict (and its events)."""
    from bench.core import record

    summary = as_summary(data)
    steps = [e if isinstance(e, record.Step) else step(**e) for e in events]
    return record.Run(run_dir or Path(summary.run), summary, {}, steps, [])


STEP = {"step": 1, "step_time_s": 1.0, "tokens": 0, "trainable_tokens": 0, "len_sq": 0, "time": 0.0}
SAMPLE = {"t": 0.0, "time": 0.0, "rss_mb": 0.0, "cpu_pct": 0.0}


def step(**fields) -> record.Step:
    """A step record as the worker writes it, with neutral values for the fields a test does not set."""
    return record.parse(record.Step, STEP | fields, Path(results.EVENTS), "a test")


def sample(**fields) -> record.Sample:
    """A resource sample as the sampler writes it (`gpus`: GpuSample mappings), the rest neutral."""
    return record.parse(record.Sample, SAMPLE | fields, Path(results.SAMPLES), "a test")
