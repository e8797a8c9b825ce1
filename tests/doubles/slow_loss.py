"""TRL's runner with a compute_loss that sleeps SLEEP_S after taking the loss: a framework whose loss step
costs more, and nothing else. Chosen with framework.runner=tests.doubles.slow_loss (the repository on the
worker's PYTHONPATH)."""

import time

from bench.worker.runners import trl as trl_runner

SLEEP_S = 1.0  # far above what a busy machine adds to any phase of a tiny model's step
NOT_APPLIED = trl_runner.NOT_APPLIED
unsupported_reason = trl_runner.unsupported_reason
translate = trl_runner.translate


def train(ctx):
    import trl

    compute_loss = trl.SFTTrainer.compute_loss

    def slow(self, *args, **kwargs):
        loss = compute_loss(self, *args, **kwargs)
        time.sleep(SLEEP_S)
        return loss

    trl.SFTTrainer.compute_loss = slow
    return trl_runner.train(ctx)
