"""The README is the front door (at most 150 lines: what, two commands, a real output excerpt, links) and every
fact it moved lives in docs/; every relative link resolves, to a heading where it names one."""

import re
from pathlib import Path

from bench.analysis import report
from bench.core import config
from tests.integration.test_parity import PARITY, REFERENCE

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, REPO / "results" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SET_UP = [
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python -m bench.run",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# What the README said before it became a front door, each now in docs/ (or still in the README).
MOVED = [
    "A failing run never ends the sweep.", "Nothing is left running.", "Nothing already written is lost.",
    "One writer per run.", "Resume reruns the sweep's own jobs.", "Environments are never half-used.",
    "Bad input is one line, before any run starts", "A run uses exactly the data its job key names.",
    "Secrets never reach a file.", "A config is code.", "## Export to MLflow or TensorBoard", "## Memory frontier",
    "## Several GPUs", "## Sweeps on a Slurm cluster", "## Environments", "## GPU runners without PyPI",
    "## Packing, padding and kernels", "## Time to quality", "**Adding a framework** takes two files",
    "JobSpec.job_key()", "training-data fingerprint", "hardware FLOPs", "gpu-regression.yml",
    "pytest benchmarks/test_sft.py --benchmark-autosave", "scripts/gpu_bench.sh", "SFTBENCH_BURN_CPUS=2",
    "benchmarks/overhead.py", "huggingface-cli download shibing624/medical", "seed-7b-24gb", "llamafactory-wiki",
    "dataset.on_bad_row=skip", "Where things are decided, once each",
]  # fmt: skip


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_the_readme_is_at_most_150_lines_and_keeps_its_two_set_up_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    for command in SET_UP:
        assert f"```\n{command}\n```" in text


def test_every_relative_link_resolves_to_a_file_and_heading():
    for page in PAGES:
        for target in LINK.findall(re.sub(r"```.*?```", "", page.read_text(), flags=re.S)):
            if re.match(r"[a-z]+:", target):
                continue  # a URL
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.relative_to(REPO)}: {target}"
            if anchor and resolved.suffix == ".md":
                assert anchor in anchors(resolved), f"{page.relative_to(REPO)}: {target}"


def test_every_section_the_readme_dropped_is_in_docs():
    text = "\n".join(p.read_text() for p in PAGES)
    assert [fact for fact in MOVED if fact not in text] == []


def test_the_readme_excerpt_is_the_recorded_cpu_sweep_s_findings():
    """The README's output excerpt came from a real run; that run is tests/fixtures/cpu-sweep, so its report
    must say the same findings, word for word."""
    excerpt = README.read_text().split("Findings: ", 1)[1].split("\nreport: ", 1)[0]
    lines: list[str] = []
    for row in excerpt.splitlines()[2:]:  # after the note (two terminal lines)
        if row.startswith("- "):
            lines.append(row[2:])
        else:
            lines[-1] += " " + row  # the terminal wrapped it at a space
    built = report.compose(REPO / "tests" / "fixtures" / "cpu-sweep")
    assert lines == built.findings


# Every list of frameworks in the docs names exactly the registered ones (conf/framework/*.yaml); a name
# compares in lower case without punctuation (LLaMA-Factory is llamafactory).
REGISTERED = set(config.frameworks())


def names(text: str) -> set[str]:
    """The framework names in a written list: 'TRL, LLaMA-Factory and Unsloth' -> {trl, llamafactory, unsloth}."""
    return {re.sub(r"[^a-z0-9]", "", n.lower()) for n in re.split(r",\s*(?:and\s+)?|\s+and\s+", text) if n.strip()}


def doc(name: str) -> str:
    return (REPO / name).read_text()


def test_the_readme_names_every_registered_framework():
    paragraph = doc("README.md").split("\nFrameworks: ", 1)[1].split("\n\n", 1)[0]
    assert names(", ".join(re.findall(r"\*\*([^*]+)\*\*", paragraph))) == REGISTERED


def test_the_package_description_names_every_registered_framework():
    description = re.search(r'^description = "(.+)"$', doc("pyproject.toml"), flags=re.M).group(1)
    assert names(description.split(" across ", 1)[1]) == REGISTERED


def test_the_frameworks_page_has_a_row_and_a_section_for_every_registered_framework():
    page = doc("docs/frameworks.md")
    assert names(", ".join(re.findall(r"^\| \*\*([^*]+)\*\* \|", page, flags=re.M))) == REGISTERED
    assert names(", ".join(re.findall(r"`([A-Z]+)`", page.split("(`NAME` = ", 1)[1].split(")", 1)[0]))) == REGISTERED
    headed = set().union(*(names(h.replace(" and ", ", ")) for h in re.findall(r"^## (.+)$", page, flags=re.M)))
    assert REGISTERED <= headed


def test_the_config_groups_table_lists_every_registered_framework():
    row = next(line for line in doc("docs/usage.md").splitlines() if line.startswith("| `framework` |"))
    assert names(", ".join(re.findall(r"`([^`]+)`", row.split("|")[2]))) == REGISTERED


def test_the_packing_table_covers_every_registered_framework():
    """A column per framework, or a note right under the table that says where its packing is described."""
    header, *rest = doc("docs/methodology.md").split("| `train.packing` |", 1)[1].splitlines()
    columns = names(", ".join(c.strip() for c in header.split("|")[1:] if c.strip()))
    note = next(line for line in rest if line.strip() and not line.startswith("|"))
    noted = names(re.match(r"\(([^:]+): see ", note).group(1)) if note.startswith("(") else set()
    assert columns | noted == REGISTERED and not columns & noted


def test_the_frameworks_said_to_match_trl_are_the_ones_the_parity_test_checks():
    sentence = doc("docs/methodology.md").split("On the default job ", 1)[1].split(" produce the same fingerprint")[0]
    assert names(sentence) == {REFERENCE, *PARITY}


def test_the_environments_the_test_suite_builds_are_every_framework_that_runs_without_a_gpu():
    cpu = {name for name, facts in config.frameworks().items() if not facts["needs_gpu"]}
    for page in ("README.md", "docs/development.md"):
        listed = " ".join(doc(page).split("builds the ", 1)[1].split(" environments", 1)[0].split())
        assert names(listed) == cpu, page


def test_the_architecture_page_places_every_module_and_names_real_functions():
    import ast
    import re

    page = doc("docs/architecture.md")
    assert len(page.splitlines()) <= 80
    runners = REPO / "bench" / "worker" / "runners"
    modules = {"/".join(p.relative_to(REPO / "bench").with_suffix("").parts) for p in (REPO / "bench").rglob("*.py")
               if p.stem not in ("__init__", "__main__") and (p.parent != runners or p.stem == "base")}  # fmt: skip
    modules = {m for m in modules if "/" in m} | {"worker/runners/<framework>"}
    named = set(re.findall(r"`([\w/<>]+)`", page))
    assert modules <= named, f"not placed in docs/architecture.md: {sorted(modules - named)}"
    assert {"run", "report", "compare", "export", "frontier"} <= named  # the commands
    dotted_names = re.findall(r"\b((?:core|sweep|worker|analysis)\.\w+\.[\w.]+)", page)
    assert len(dotted_names) > 10
    for dotted in set(dotted_names):
        package, module, *attrs = dotted.split(".")
        scope = ast.parse((REPO / "bench" / package / f"{module}.py").read_text(encoding="utf-8"))
        for attr in attrs:  # every name the page points a newcomer to is defined there (read, not imported)
            scope = next(n for n in scope.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == attr)


def test_the_results_layout_names_every_field_of_every_run_file():
    """docs/results-layout.md against bench/core/record.py: a line record's fields in its file's entry, the
    summary's and the worker report's anywhere on the page."""
    import dataclasses
    import re

    from bench.core import record

    page = doc("docs/results-layout.md")

    def entry(name: str) -> set[str]:
        block = page.split(f"    {name} ", 1)[1]
        text = re.split(r"\n    [a-z_.]+\s{2,}", block, maxsplit=1)[0]  # up to the next file of the run
        return set(re.findall(r"[a-z_0-9]+", text))

    for name, classes in {"events.jsonl": (record.Step,), "samples.jsonl": (record.Sample, record.GpuSample),
                          "generations.jsonl": (record.Generation,)}.items():  # fmt: skip
        fields = {f.name for cls in classes for f in dataclasses.fields(cls)} - {"gpus"}  # samples' gpus: per GPU
        assert fields <= entry(name), (name, sorted(fields - entry(name)))
    words = set(re.findall(r"[a-z_0-9]+", page))
    for cls in (record.Summary, record.WorkerResult):
        missing = {f.name for f in dataclasses.fields(cls)} - words
        assert not missing, (cls.__name__, sorted(missing))
