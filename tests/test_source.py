"""framework.source: a directory or git ref as the system under test, known by its content."""

import subprocess

import pytest

from bench import source
from bench.errors import SpecError
from tests.test_config import typed


def project(path, name="trl", body="x = 1\n"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1.16.0"\n')
    (path / "mod.py").write_text(body)
    return path


def git(path, *args):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, check=True,
                          env=env | {"PATH": "/usr/bin:/bin"}).stdout.strip()  # fmt: skip


def repo(path):
    project(path)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "one")
    return path


def test_an_unpacked_sdist_is_known_by_its_content(tmp_path):
    a = source.resolve(str(project(tmp_path / "a")), "trl", tmp_path / "cache")
    same = source.resolve(str(project(tmp_path / "b")), "trl", tmp_path / "cache")
    changed = source.resolve(str(project(tmp_path / "c", body="x = 2\n")), "trl", tmp_path / "cache")
    assert a.identity == same.identity != changed.identity  # where it lies does not matter, what it holds does
    assert a.commit is None and a.label == f"tree.{a.identity[:7]}"


def test_a_checkout_is_its_commit_and_a_dirty_one_its_content(tmp_path):
    path = repo(tmp_path / "r")
    clean = source.resolve(str(path), "trl", tmp_path / "cache")
    head = git(path, "rev-parse", "HEAD")
    assert (clean.identity, clean.dirty, clean.label) == (head, False, head[:7])
    (path / "mod.py").write_text("x = 3\n")
    dirty = source.resolve(str(path), "trl", tmp_path / "cache")
    assert dirty.dirty and dirty.identity != head and dirty.label.startswith(f"{head[:7]}+dirty.")


def test_a_git_url_with_a_ref_is_resolved_to_its_commit_and_exported(tmp_path):
    path = repo(tmp_path / "r")
    first = git(path, "rev-parse", "HEAD")
    (path / "mod.py").write_text("x = 4\n")
    git(path, "commit", "-q", "-am", "two")
    src = source.resolve(f"git+file://{path}@{first}", "trl", tmp_path / "cache")
    assert src.identity == src.commit == first and (tmp_path / "cache" / "sources").is_dir()
    assert (source.Path(src.path) / "mod.py").read_text() == "x = 1\n"  # the tree at that ref, not main's
    assert source.resolve(f"git+file://{path}@main", "trl", tmp_path / "cache").commit == git(path, "rev-parse", "HEAD")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: str(t / "nowhere"), "no such directory"),
        (lambda t: str((t / "empty").mkdir() or t / "empty"), "not a Python project"),
        (lambda t: str(project(t / "other", name="transformers")), "it is the package 'transformers', not the "
                                                                   "framework's 'trl'"),
        (lambda t: f"git+file://{repo(t / 'r')}@no-such-ref", "the ref 'no-such-ref' does not resolve to a commit"),
        (lambda t: f"git+file://{t / 'missing'}@main", "git clone --quiet failed"),
    ],
)
def test_a_source_that_cannot_be_used_is_one_line(tmp_path, make, message):
    with pytest.raises(SpecError) as e:
        source.resolve(make(tmp_path), "trl", tmp_path / "cache")
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_only_the_frameworks_own_requirement_is_replaced_and_the_key_is_its_identity(tmp_path):
    src = source.resolve(str(project(tmp_path / "a")), "trl", tmp_path / "cache")
    install, key = source.requirements(["trl==1.16.0", "torch==2.13.0", "transformers==5.24.0"], "trl", src)
    assert install == [src.path, "torch==2.13.0", "transformers==5.24.0"]
    assert key == [f"trl @ source {src.identity}", "torch==2.13.0", "transformers==5.24.0"]


def test_a_source_is_set_explicitly_and_off_by_default():
    assert typed("framework=trl").framework.source is None
    assert typed("framework=trl", "framework.source=/src/trl").framework.source == "/src/trl"
