"""A runner that fails on purpose, the way real workers fail: chosen by the MISBEHAVE variable.

Registered the way every framework is, by one conf file (tests/conf/framework/misbehave.yaml, on Hydra's search
path in tests): no harness code knows of it.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

NOT_APPLIED: frozenset[str] = frozenset()


def unsupported_reason(spec):
    return None


def translate(spec, precision, on_gpu):
    return {"mode": os.environ.get("MISBEHAVE", "raise")}


def train(ctx):
    mode = os.environ.get("MISBEHAVE", "raise")
    if mode == "oom_above":  # a card that holds sequences up to MISBEHAVE_LIMIT tokens
        if ctx.spec.train.max_seq_len > int(os.environ["MISBEHAVE_LIMIT"]):
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        assert all(len(r["input_ids"]) == ctx.spec.dataset.fill_to for r in ctx.pretokenized())
        return {}
    from bench.core.record import Step

    ctx.callbacks[0].emit(Step(1, step_time_s=0.1, tokens=1, trainable_tokens=1, len_sq=1, time=time.time(), loss=1.0))
    if mode == "raise":
        raise RuntimeError("the framework broke")
    if mode == "exit":
        os._exit(3)
    if mode == "kill9":  # what the OOM killer does
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "fill":  # the disk fills up under the run
        from tests.doubles.disk import fill

        fill(Path(ctx.spec.run_dir))
        return {}
    if mode in ("rmrun", "rmsweep"):  # its run directory, or the whole sweep's, deleted under it
        import shutil

        shutil.rmtree(Path(ctx.spec.run_dir) if mode == "rmrun" else Path(ctx.spec.run_dir).parent)
        return {}
    if mode == "leak":  # prints a secret from its environment, then hangs until it is killed
        print(f"logging in with {os.environ.get('HF_TOKEN')}", flush=True)
        time.sleep(600)
    if mode == "hang":
        subprocess.Popen(["sleep", "600"])  # a child of its own: the whole tree must go
        time.sleep(600)
    if mode == "oom":
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    return {}
