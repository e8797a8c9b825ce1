"""One module per framework; nothing framework-specific lives anywhere else.

The contract a runner module fulfils is `bench.worker.runners.base.Runner`; which module runs a framework is
declared in its conf/framework/<name>.yaml (`runner:`); what adding a framework takes: docs/adding-a-framework.md.
Only the worker loads runners, inside the framework's own environment.
"""

from __future__ import annotations

import importlib

from bench.worker.runners.base import Runner


def load(module: str) -> Runner:
    """The runner module `module` (framework.runner), checked against the contract."""
    runner = importlib.import_module(module)
    if not isinstance(runner, Runner):
        missing = [n for n in ("NOT_APPLIED", "unsupported_reason", "translate", "train") if not hasattr(runner, n)]
        raise TypeError(f"{module} is not a runner: it lacks {', '.join(missing)} (see bench/worker/runners/base.py)")
    return runner
