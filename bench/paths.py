"""Where conf/ is, for the parent and the worker alike (standard library only: a framework environment has no
omegaconf). bench.config reads the composed config; this module only finds its files."""

from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    """conf/: packaged inside `bench` by a regular install, beside it in a checkout (editable install)."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "conf"
