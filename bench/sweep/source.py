"""A framework's source as the system under test (`framework.source`): a local directory (a checkout or an
unpacked sdist) or a git URL with a ref (`git+URL@REF`), installed into the framework's environment instead
of the released version.

A source is known by its content: the commit of a clean git checkout or of a resolved ref, otherwise a hash
of the tree's files (a dirty checkout included), so a changed source builds a new environment and an
unchanged one reuses its own. Only the framework's own requirement line is replaced; its companion pins stay.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import SpecError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pyproject.toml's name is read line by line
    tomllib = None

SKIPPED = {".git", "__pycache__", "build", "dist", ".venv", ".tox", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True)
class Source:
    given: str  # framework.source as set
    path: str  # the tree pip installs: a copy under the cache, named by the identity
    identity: str  # commit (git) or content hash (a directory, a dirty checkout)
    commit: str | None
    dirty: bool  # a checkout with changes not committed: known by its content, not its commit

    @property
    def label(self) -> str:
        """How the system is named: `trl @ 3f2a1c9` (a commit), `trl @ 3f2a1c9+dirty.0e1d2c3`, `trl @ tree.0e1d2c3`."""
        if self.commit and not self.dirty:
            return self.commit[:7]
        tree = f"tree.{self.identity[:7]}"
        return f"{self.commit[:7]}+dirty.{self.identity[:7]}" if self.commit else tree

    def record(self) -> dict[str, Any]:
        return asdict(self) | {"label": self.label}


def resolve(given: str, distribution: str, cache: Path) -> Source:
    """The source `given` (a directory or `git+URL@REF`) checked and identified; SpecError in one line when it
    does not exist, is no Python project, has an unresolvable ref, or is another package than `distribution`."""
    if given.startswith("git+"):
        source = from_git(given, cache / "sources")
    else:
        source = from_directory(given, cache / "sources")
    name = project_name(Path(source.path))
    if normalise(name) != normalise(distribution):
        raise SpecError(f"framework.source={given}: it is the package {name!r}, not the framework's {distribution!r}")
    return source


def from_directory(given: str, store: Path) -> Source:
    """A checkout or unpacked sdist, copied once per identity under `store` and installed from there: a build
    never writes into the user's tree (pip builds in place), and the tree cannot change under the build."""
    path = Path(given).expanduser()
    if not path.is_dir():
        raise SpecError(f"framework.source={given}: {'not a directory' if path.exists() else 'no such directory'}")
    path = path.resolve()
    commit = _git(path, "rev-parse", "HEAD") if (path / ".git").exists() else None
    # The tree is copied first and known by the copy's content: what pip installs is what the identity names,
    # even if the user's tree is edited while it is taken.
    partial = store / f"tree.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    store.mkdir(parents=True, exist_ok=True)
    shutil.copytree(path, partial, ignore=lambda _, names: [n for n in names if n in SKIPPED or n.endswith(".pyc")])
    content = tree_hash(partial)
    dirty = bool(commit and _git(path, "status", "--porcelain"))  # after the copy: an edit meanwhile shows
    identity = commit if commit and not dirty else content
    copy = store / f"tree-{identity[:12]}"
    if copy.is_dir() and tree_hash(copy) != content:  # a copy that no longer holds what its name says: replaced
        shutil.rmtree(copy)
    settle(partial, copy)
    return Source(given, str(copy), identity, commit, dirty)


def settle(partial: Path, final: Path) -> None:
    """A tree written under a temporary name put in place; another sweep that got there first wins."""
    try:
        partial.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(partial, ignore_errors=True)


def from_git(given: str, store: Path) -> Source:
    """`git+URL@REF`: the ref resolved to a commit in a clone kept under `store`, its tree exported once."""
    url, _, ref = given.removeprefix("git+").rpartition("@")
    if not url or not ref:
        raise SpecError(f"framework.source={given}: a git source is git+URL@REF (a branch, tag or commit)")
    clone = store / f"git-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
    if not clone.exists():
        store.mkdir(parents=True, exist_ok=True)
        _run(given, ["git", "clone", "--quiet", "--mirror", url, str(clone)])
    else:
        _run(given, ["git", "-C", str(clone), "fetch", "--quiet", "--prune", "origin"])
    try:
        commit = _git(clone, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except SpecError:
        commit = ""
    if not commit:
        raise SpecError(f"framework.source={given}: the ref {ref!r} does not resolve to a commit in {url}")
    tree = store / f"tree-{commit[:12]}"
    if not tree.exists():
        partial = tree.with_name(tree.name + f".{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(clone), "archive", commit], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(partial)], input=archive.stdout, check=True)
        settle(partial, tree)
    return Source(given, str(tree), commit, commit, False)


def project_name(path: Path) -> str:
    """The distribution a source tree builds: pyproject.toml's [project] name, setup.cfg's, or setup.py's."""
    where = f"framework.source={path}"
    if (path / "pyproject.toml").is_file():
        name = pyproject_name((path / "pyproject.toml").read_text(encoding="utf-8"), where)
        if name:
            return name
    if (path / "setup.cfg").is_file():
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(path / "setup.cfg", encoding="utf-8")
        if parser.has_option("metadata", "name"):
            return parser.get("metadata", "name")
    if (path / "setup.py").is_file():
        found = re.search(r"""name\s*=\s*["']([^"']+)["']""", (path / "setup.py").read_text(encoding="utf-8"))
        if found:
            return found[1]
    raise SpecError(f"{where}: not a Python project (no project name in pyproject.toml, setup.cfg or setup.py)")


def pyproject_name(text: str, where: str) -> str | None:
    if tomllib is None:
        found = re.search(r'^\[project\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.MULTILINE | re.DOTALL)
        return found[1] if found else None
    try:
        return tomllib.loads(text).get("project", {}).get("name")
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{where}: pyproject.toml does not parse ({e})") from None


def tree_hash(path: Path) -> str:
    """SHA-256 over the tree's files (relative paths and contents), caches and build output left out."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not SKIPPED & set(p.relative_to(path).parts)):
        if f.suffix == ".pyc" or any(part.endswith(".egg-info") for part in f.relative_to(path).parts):
            continue
        h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def requirements(own: list[str], distribution: str, source: Source) -> tuple[list[str], list[str]]:
    """The environment's requirements with the framework's own line replaced by the source tree: what pip
    installs, and what keys the environment (the source's identity in place of its path)."""
    def mine(line: str) -> bool:
        return normalise(re.split(r"[\s=<>!~;\[@]", line.strip(), maxsplit=1)[0]) == normalise(distribution)

    install = [source.path if mine(r) else r for r in own]
    if source.path not in install:
        install.insert(0, source.path)
    key = [f"{distribution} @ source {source.identity}" if r == source.path else r for r in install]
    return install, key


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _git(path: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SpecError(f"framework.source={path}: git {' '.join(args)} failed: {proc.stderr.strip()[:200]}")
    return proc.stdout.strip()


def _run(given: str, cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        message = " ".join(proc.stderr.split())[:300]
        raise SpecError(f"framework.source={given}: {' '.join(cmd[:3])} failed: {message}")
