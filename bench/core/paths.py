"""Where conf/ is, for the parent and the worker alike (standard library only: a framework environment has no
omegaconf). bench.core.config reads the composed config; this module only finds its files."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # bench/
PARENT_PID = "SFTBENCH_PARENT_PID"  # the environment variable naming the sweep process a worker watches


def conf_dir() -> Path:
    """conf/: packaged inside `bench` by a regular install, beside it in a checkout (editable install)."""
    packaged = PACKAGE_DIR / "conf"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / "conf"
