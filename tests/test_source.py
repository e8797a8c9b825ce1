"""framework.source: a directory or git ref as the system under test, known by its content."""

import subprocess

import pytest

from bench.core.errors import SpecError
from bench.sweep import source
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


def test_a_tree_edited_while_it_is_taken_is_known_by_what_was_copied(tmp_path, monkeypatch):
    tree = project(tmp_path / "src")
    real_copytree = source.shutil.copytree

    def edit_then_copy(src, dst, **kwargs):  # the user saves a file between the look and the copy
        (tree / "mod.py").write_text("x = 'edited'\n")
        return real_copytree(src, dst, **kwargs)

    monkeypatch.setattr(source.shutil, "copytree", edit_then_copy)
    got = source.resolve(str(tree), "trl", tmp_path / "cache")
    installed = source.Path(got.path)
    assert (installed / "mod.py").read_text() == "x = 'edited'\n"
    assert got.identity == source.tree_hash(installed)


def test_a_cached_copy_that_no_longer_matches_its_name_is_rebuilt(tmp_path):
    tree = project(tmp_path / "src")
    first = source.resolve(str(tree), "trl", tmp_path / "cache")
    (source.Path(first.path) / "mod.py").write_text("x = 'tampered'\n")  # the copy changed in the cache
    again = source.resolve(str(tree), "trl", tmp_path / "cache")
    assert again.identity == first.identity and (source.Path(again.path) / "mod.py").read_text() == "x = 1\n"


@pytest.mark.parametrize("url", ["git+https://ghp_SECRETTOKEN123@github.com/x/trl.git@main",
                                 "git+https://someone:ghp_SECRETTOKEN123@github.com/x/trl.git@main",
                                 "git+https://oauth2:ghp_SECRETTOKEN123@gitlab.com/x/trl.git@v1"])  # fmt: skip
def test_a_source_url_with_credentials_is_refused_before_anything_is_written(tmp_path, url):
    import sys

    from tests.conftest import REPO

    proc = subprocess.run([sys.executable, "-m", "bench.run", f"results_dir={tmp_path}", f"framework.source={url}"],
                          cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "SECRETTOKEN" not in proc.stdout + proc.stderr
    assert "a URL with credentials" in proc.stderr and "credential helper" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())  # Hydra wrote nothing


def test_a_login_name_in_an_ssh_url_is_not_a_credential():
    from bench.sweep.app import credentials_in

    assert credentials_in(["framework.source=git+ssh://git@github.com/x/trl.git@main"]) is None
    assert credentials_in(["framework.source=git+ssh://git:pw@github.com/x/trl.git@main"]) is not None


def test_a_token_alone_in_a_url_is_scrubbed_from_any_message():
    from bench.core.results import redact

    assert redact("cannot clone https://ghp_X1@github.com/x.git") == "cannot clone https://***@github.com/x.git"


def fake_builds(monkeypatch, fail_release=False):
    """envs.ensure_env as a recorder: each environment 'built' in 10 s (the release's failing, if asked)."""
    from bench.sweep import app, envs

    calls = []

    def ensure_env(env, requirements, on_line=None, expect=None, notice=None, layer=None):
        calls.append((env, layer))
        if fail_release and layer is None and "source" not in env.name:
            raise envs.EnvError("trl==1.16.0: no matching distribution")
        (env / envs.COMPLETE).parent.mkdir(parents=True, exist_ok=True)
        (env / envs.COMPLETE).write_text("")
        return envs.python_of(env), 10.0

    monkeypatch.setattr(envs, "ensure_env", ensure_env)
    monkeypatch.setattr(envs, "dir_size_mb", lambda env: 1.0)
    return app, calls


def test_a_sources_environment_is_built_over_the_releases_and_counts_its_build(tmp_path, monkeypatch):
    app, calls = fake_builds(monkeypatch)
    cfg = typed("framework=trl", f"cache_dir={tmp_path}", f"framework.source={project(tmp_path / 'src')}")
    src = app.framework_source(cfg)
    _, cost = app.framework_python(cfg, src)
    release, source_env = app.framework_env(cfg)[0], app.framework_env(cfg, src)[0]
    assert calls == [(release, None), (source_env, app.envs.Layer(release, "trl"))]
    assert cost["env_build_s"] == 20.0  # the release's build, then the source's over it
    calls.clear()
    app.framework_python(cfg, src)  # built: the release's is not touched again
    assert calls == [(source_env, None)]


def test_where_the_release_cannot_be_built_the_source_is_built_from_scratch(tmp_path, monkeypatch, capsys):
    app, calls = fake_builds(monkeypatch, fail_release=True)
    cfg = typed("framework=trl", f"cache_dir={tmp_path}", f"framework.source={project(tmp_path / 'src')}")
    _, cost = app.framework_python(cfg, app.framework_source(cfg))
    assert calls[-1][1] is None and cost["env_build_s"] == 10.0
    assert "could not be built (trl==1.16.0: no matching distribution); building the source's environment from " \
           "scratch" in " ".join(capsys.readouterr().err.split())
