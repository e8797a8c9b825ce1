"""The one TrainerCallback every runner passes to its framework (all three train through HF Trainer).

Per optimizer step it emits: loss, learning rate, grad norm, tokens fed (non-padding), trainable (answer)
tokens and step wall time. Tokens are counted by the harness itself, from the batches the model is actually
called with (a forward pre-hook), so they are counted the same way whatever the framework's collator does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

IGNORE_INDEX = -100


def batch_token_counts(inputs: dict[str, Any]) -> tuple[int, int]:
    """(non-padding tokens, tokens that contribute to the loss) of one model call's keyword inputs."""
    input_ids = inputs.get("input_ids")
    mask = inputs.get("attention_mask")
    labels = inputs.get("labels")
    if mask is not None and mask.dim() == 2:
        tokens = int(mask.sum())
    elif input_ids is not None:
        tokens = int(input_ids.numel())  # padding-free batches carry no mask: every token is real
    else:
        tokens = 0
    # Causal LM loss compares position t with label t+1, so the first label of each row never counts.
    trainable = int((labels[..., 1:] != IGNORE_INDEX).sum()) if labels is not None else 0
    return tokens, trainable


class StepRecorder(TrainerCallback):
    """Writes one event per optimizer step through `emit` (a dict sink)."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]):
        self.emit = emit
        self._hook = None
        self._tokens = 0
        self._trainable = 0
        self._step_mark = 0.0
        self._pending: dict[int, dict[str, Any]] = {}
        self._cuda_sync: Callable[[], None] | None = None

    def _count_batch(self, module, args, kwargs):
        if module.training:
            tokens, trainable = batch_token_counts(kwargs)
            self._tokens += tokens
            self._trainable += trainable

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import torch

        if model is not None:
            self._hook = model.register_forward_pre_hook(self._count_batch, with_kwargs=True)
        if torch.cuda.is_available():
            self._cuda_sync = torch.cuda.synchronize
        self._step_mark = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._cuda_sync is not None:
            self._cuda_sync()  # step time is wall time of finished GPU work, not of queued kernels
        now = time.perf_counter()
        # Wall time since the previous step ended: data loading, forward/backward and optimizer step.
        self._pending[state.global_step] = {
            "step": state.global_step,
            "step_time_s": now - self._step_mark,
            "tokens": self._tokens,
            "trainable_tokens": self._trainable,
        }
        self._tokens = self._trainable = 0
        self._step_mark = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        event = self._pending.pop(state.global_step, None)
        if event is None or not logs or "loss" not in logs:
            if event is not None:
                self._pending[state.global_step] = event
            return
        event.update(
            loss=float(logs["loss"]),
            lr=float(logs.get("learning_rate", float("nan"))),
            grad_norm=float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None,
        )
        self.emit(event)
        self._step_mark = time.perf_counter()  # logging is bookkeeping, not training time

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
