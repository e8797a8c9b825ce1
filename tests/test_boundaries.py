"""Import direction and packaging: the parent side never loads a framework, conf/ ships with the package."""

import json
import re
import subprocess
import sys
import zipfile

import pytest
from omegaconf import OmegaConf

from bench.core import config
from bench.sweep import envs
from tests.conftest import REPO

PARENT_MODULES = ("bench.run", "bench.report", "bench.compare", "bench.frontier", "bench.export", "bench.history",
                  "bench.bisect")
# What every framework's worker trains with, whichever framework pins it.
TRAINING_STACK = {"torch", "transformers", "peft", "accelerate", "datasets"}


def framework_modules() -> set[str]:
    """Import names of everything a registered framework installs (conf/framework/*.yaml: its distribution,
    the packages it records, its requirements, companions and kernel requirements), plus the training stack.
    A distribution's import name is its name in lower case with '-' and '.' as '_' (liger-kernel -> liger_kernel),
    true of every one registered today."""
    names = set()
    for path in sorted((config.conf_dir() / "framework").glob("*.yaml")):
        fw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        requirements = [*fw.get("requirements", [])]
        for group in ("companions", "kernel_requirements"):
            requirements += [r for rs in (fw.get(group) or {}).values() for r in rs]
        names |= {fw["distribution"], *fw.get("packages", [])}
        names |= {re.match(r"[A-Za-z0-9_.\-]+", r).group() for r in requirements}
    return {re.sub(r"[-.]", "_", n.lower()) for n in names} | TRAINING_STACK


def loaded_by(*modules: str) -> set[str]:
    """Every module a fresh interpreter holds after importing `modules`."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(json.loads(proc.stdout))


def test_the_framework_modules_come_from_conf():
    found = framework_modules()
    assert {"trl", "llamafactory", "unsloth", "axolotl", "liger_kernel", "unsloth_zoo", "torch"} <= found
    assert all(config.frameworks()[name]["distribution"] in found for name in config.frameworks())


def test_the_parent_side_imports_no_framework_and_no_runner():
    loaded = loaded_by(*PARENT_MODULES)
    assert not framework_modules() & {m.split(".")[0] for m in loaded}
    assert not [m for m in loaded if m.startswith("bench.worker.runners.") and m != "bench.worker.runners.base"]


def test_compare_and_export_import_no_plotting_no_statistics_and_no_torch():
    assert not {"matplotlib", "scipy", "torch"} & {m.split(".")[0] for m in loaded_by("bench.compare", "bench.export")}


def test_report_and_compare_do_not_import_the_sweep_app():
    code = "import bench.report, bench.compare, sys; print('bench.run' in sys.modules, 'bench.frontier' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "False"]


def test_an_environment_is_built_without_the_parents_python_path(monkeypatch):
    """With the parent's PYTHONPATH, pip would see the parent's packages as installed and skip them."""
    monkeypatch.setenv("PYTHONPATH", "/parent/site-packages")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")  # a user's pip settings still apply
    env = envs.build_environ()
    assert "PYTHONPATH" not in env and env["PYTHONNOUSERSITE"] == "1"
    assert env["PIP_INDEX_URL"] == "https://mirror.example/simple"


def test_the_build_runs_pip_in_that_environment(monkeypatch, tmp_path):
    seen = []

    class FakePopen:
        def __init__(self, cmd, env=None, **kwargs):
            seen.append(env)
            self.stdout, self.returncode = iter(()), 0

        def wait(self):
            return 0

    monkeypatch.setenv("PYTHONPATH", "/parent/site-packages")
    monkeypatch.setattr(envs.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(envs.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    (tmp_path / "env").mkdir()
    envs._build(tmp_path / "env", ["trl==1.16.0"], lambda line: None, sys.executable)
    assert seen and all(env is not None and "PYTHONPATH" not in env for env in seen)


def test_the_wheel_ships_conf_inside_the_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = tmp_path.glob("sftbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("bench/conf/config.yaml", "bench/conf/train/default.yaml", "bench/conf/framework/trl.yaml",
                 "bench/conf/hydra/launcher/slurm.yaml", "bench/assets/medical/train_zh_0.json"):  # fmt: skip
        assert path in names, path


@pytest.mark.parametrize(
    "module, first_line",
    [
        ("bench.run", "sftbench: one LoRA SFT job"),
        ("bench.frontier", "sftbench memory frontier"),
        ("bench.report", "usage: python -m bench.report"),
        ("bench.compare", "usage: python -m bench.compare"),
        ("bench.export", "usage: python -m bench.export"),
        ("bench.history", "usage: python -m bench.history"),
        ("bench.bisect", "Find the change that made a metric regress"),
    ],
)
def test_help_starts_with_how_to_use_it(module, first_line):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith(first_line), proc.stdout[:500]
    assert "python -m " + module in proc.stdout


def bench_imports() -> dict[str, set[str]]:
    """bench's import graph from the source: every module's bench imports, wherever they stand (module level,
    inside functions, under TYPE_CHECKING)."""
    import ast

    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (REPO / "bench").rglob("*.py")}  # fmt: skip
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {m for m in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if m in modules}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
        graph[name] = found - {name}
    return graph


def test_bench_has_no_import_cycle():
    graph, done, path = bench_imports(), set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(module):], module]))
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        path.pop()
        done.add(module)

    assert "bench.analysis.runs" in graph and graph["bench.report"]  # the graph was read
    for module in sorted(graph):
        visit(module)


# What each package may import (bench/<package>/__init__.py says why); the commands import their package.
MAY_IMPORT = {
    "bench.core": {"bench.core"},
    "bench.worker": {"bench.core", "bench.worker"},
    "bench.analysis": {"bench.core", "bench.analysis"},
    "bench.sweep": {"bench.core", "bench.sweep", "bench.analysis"},
}
# What a framework's environment holds of bench.core: the modules that need only the standard library there.
WORKER_CORE = {"bench.core.data", "bench.core.errors", "bench.core.metrics", "bench.core.models", "bench.core.paths",
               "bench.core.record",
               "bench.core.results", "bench.core.spec"}  # fmt: skip


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_each_package_imports_only_what_it_may():
    graph = bench_imports()
    assert set(MAY_IMPORT) <= set(graph)
    wrong = {(m, i) for m, found in graph.items() if package_of(m) in MAY_IMPORT
             for i in found if package_of(i) not in MAY_IMPORT[package_of(m)]}  # fmt: skip
    assert not wrong, sorted(wrong)


def test_the_top_level_holds_only_the_commands():
    commands = {p.stem for p in (REPO / "bench").glob("*.py")} - {"__init__"}
    assert commands == {"run", "report", "compare", "export", "frontier", "history", "bisect"}
    graph = bench_imports()
    for command in commands:  # a command is its package's entry point, nothing more
        assert {package_of(m) for m in graph[f"bench.{command}"]} in ({"bench.sweep"}, {"bench.analysis"}), command


def test_the_worker_reaches_only_the_standard_library_part_of_core():
    graph, seen, todo = bench_imports(), set(), ["bench.worker.main", "bench.worker.runners"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += [m for m in graph[module] if not m.startswith("bench.worker.runners.") or m.endswith(".base")]
    assert {m for m in seen if m.startswith("bench.core.")} <= WORKER_CORE
