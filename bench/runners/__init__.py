"""One module per framework; nothing framework-specific lives anywhere else.

A runner module provides:
  preflight(spec) -> str | None            optional, in the parent: why the job cannot run on this host at all
                                           (checked before building the framework's environment)
  unsupported_reason(spec) -> str | None   in the worker: why the job cannot run here, without importing
                                           the framework
  setup() -> None                          optional: imports that must come before transformers
  train(ctx) -> dict                       train with ctx.callbacks; returns extra facts for the summary
It imports its framework inside those functions: the module itself is importable in any environment.
"""

from __future__ import annotations

import importlib
from types import ModuleType

RUNNERS = ("trl", "llamafactory", "unsloth")


def load(name: str) -> ModuleType:
    if name not in RUNNERS:
        raise KeyError(f"unknown framework {name!r}; known: {', '.join(RUNNERS)}")
    return importlib.import_module(f"bench.runners.{name}")
