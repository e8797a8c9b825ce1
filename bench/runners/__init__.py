"""One module per framework; nothing framework-specific lives anywhere else.

A runner module provides:
  unsupported_reason(spec) -> str | None   why the job cannot run here, decided without importing the framework
  train(ctx) -> dict                        train with ctx.callbacks; returns extra facts for the summary
It imports its framework inside those functions: the module itself is importable in any environment.
"""

from __future__ import annotations

import importlib
from types import ModuleType

RUNNERS = ("trl",)


def load(name: str) -> ModuleType:
    if name not in RUNNERS:
        raise KeyError(f"unknown framework {name!r}; known: {', '.join(RUNNERS)}")
    return importlib.import_module(f"bench.runners.{name}")
