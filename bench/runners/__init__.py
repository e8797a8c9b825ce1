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
import importlib.util
import os
from types import ModuleType

from bench.spec import JobSpec

RUNNERS = ("trl", "llamafactory", "unsloth")
EXTRA_RUNNERS = "SFTBENCH_EXTRA_RUNNERS"  # name=module,... : runners from outside the package (test doubles)


def available() -> dict[str, str]:
    """Framework name -> runner module."""
    found = {name: f"bench.runners.{name}" for name in RUNNERS}
    for item in filter(None, os.environ.get(EXTRA_RUNNERS, "").split(",")):
        name, _, module = item.partition("=")
        found[name.strip()] = module.strip()
    return found


def load(name: str) -> ModuleType:
    modules = available()
    if name not in modules:
        raise KeyError(f"unknown framework {name!r}; known: {', '.join(modules)}")
    return importlib.import_module(modules[name])


def quant_unsupported(
    spec: JobSpec, cuda_available: bool | None = None, find_spec=importlib.util.find_spec
) -> str | None:
    """Why 4-bit (bitsandbytes) base weights cannot be used here, or None. Shared by the runners that offer it."""
    if spec.train.quant != "4bit":
        return None
    if find_spec("bitsandbytes") is None:
        return "train.quant=4bit: bitsandbytes is not installed in this environment"
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return None if cuda_available else "train.quant=4bit: bitsandbytes 4-bit training needs a CUDA GPU"
