"""The README is the front door (at most 150 lines: what, two commands, a real output excerpt, links) and every
fact it moved lives in docs/; every relative link resolves, to a heading where it names one."""

import re
from pathlib import Path

from bench import report

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
    "One writer per run.", "Resume reruns what is not this job.", "Environments are never half-used.",
    "Bad input is one line, before any run starts", "A run uses exactly the data its job key names.",
    "Secrets never reach a file.", "A config is code.", "## Export to MLflow or TensorBoard", "## Memory frontier",
    "## Several GPUs", "## Sweeps on a Slurm cluster", "## Environments", "## GPU runners without PyPI",
    "## Packing, padding and kernels", "## Time to quality", "**Adding a framework** touches three files",
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
