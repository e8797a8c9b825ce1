"""Where a training step's time goes, split the same way for every framework.

Every runner trains through a transformers Trainer on torch, so the same hooks see every framework's step:
the model's forward pre- and post-hooks, a gradient hook on the forward's output (the backward reaches the
model: its start), each trainable parameter's post-accumulate-grad hook (the last one: its end) and torch's
global optimizer step hooks. Each interval of a step goes to exactly one phase:

- data: the step's start (or the previous micro-batch's backward) to the forward: the next batch, callbacks;
- forward: the model's forward (with TRL's fused LM head and the loss a transformers model computes itself);
- loss: the forward's end to the backward's start: the rest of the framework's `compute_loss` (its metrics);
- backward: to the last trainable parameter's gradient (gradient checkpointing's recomputation included);
- optimizer: `optimizer.step()`;
- rest: gradient clipping, the scheduler, zeroing and the step-end callbacks.

On a CPU the marks are `perf_counter` readings. On a GPU they are CUDA events, recorded on the stream as the
hooks fire and read once per step after the step's existing synchronisation: no synchronisation is added.
"""

from __future__ import annotations

import time
from typing import Any

from bench.core.metrics import PHASES


class HostClock:
    """Marks as `perf_counter` readings (CPU: the work is done when the hook fires)."""

    def mark(self) -> float:
        return time.perf_counter()

    @staticmethod
    def seconds(start: float, end: float) -> float:
        return end - start


class CudaClock:
    """Marks as CUDA events on the current stream, read only after the step's synchronisation."""

    def __init__(self, torch_module):
        self.torch = torch_module

    def mark(self):
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @staticmethod
    def seconds(start, end) -> float:
        return start.elapsed_time(end) / 1000


class Phases:
    """A step's time by phase (PHASES). `start()` where the step's clock starts, `step_end(step_time_s)` where
    it stops; the phases then sum to `step_time_s` (`rest` takes the remainder)."""

    def __init__(self, clock: HostClock | CudaClock | None = None):
        self.clock = clock or HostClock()
        self._spans: list[tuple[str, Any, Any]] = []  # (phase, start mark, end mark), read at the step's end
        self._mark: Any = None
        self._last_grad: Any = None  # the latest trainable gradient's mark in the running backward
        self._in_backward = False
        self._handles: list[Any] = []

    def attach(self, model) -> None:
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        self._handles = [
            model.register_forward_pre_hook(self._forward_start),
            model.register_forward_hook(self._forward_end),
            register_optimizer_step_pre_hook(self._optimizer_start),
            register_optimizer_step_post_hook(self._optimizer_end),
        ]
        self._handles += [p.register_post_accumulate_grad_hook(self._grad_done)
                          for p in model.parameters() if p.requires_grad]  # fmt: skip
        if torch.cuda.is_available():
            self.clock = CudaClock(torch)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def start(self) -> None:
        self._spans, self._in_backward, self._last_grad = [], False, None
        self._mark = self.clock.mark()

    def _to(self, phase: str, end: Any = None) -> None:
        """The time since the last mark is `phase`'s."""
        if self._mark is None:
            return
        end = self.clock.mark() if end is None else end
        self._spans.append((phase, self._mark, end))
        self._mark = end

    def _close_backward(self) -> None:
        if self._in_backward and self._last_grad is not None:
            self._to("backward", self._last_grad)
        self._in_backward, self._last_grad = False, None

    def _forward_start(self, module, args) -> None:
        if module.training:
            self._close_backward()
            self._to("data")

    def _forward_end(self, module, args, output) -> None:
        if not module.training:
            return
        self._to("forward")
        tensors = grad_tensors(output)
        for tensor in tensors:  # the first whose gradient is taken starts the backward
            tensor.register_hook(self._backward_start)
        if not tensors:  # no output to hook: the backward is timed from here, the loss's remainder with it
            self._in_backward = True

    def _backward_start(self, grad) -> None:
        if not self._in_backward:
            self._to("loss")
            self._in_backward = True

    def _grad_done(self, param) -> None:
        if self._in_backward:
            self._last_grad = self.clock.mark()

    def _optimizer_start(self, optimizer, args, kwargs) -> None:
        self._close_backward()
        self._to("rest")

    def _optimizer_end(self, optimizer, args, kwargs) -> None:
        self._to("optimizer")

    def step_end(self, step_time_s: float) -> dict[str, float] | None:
        """The step's phases in seconds (GPU work finished: the caller has synchronised), summing to
        `step_time_s`; None when no step was seen (the hooks never fired)."""
        self._close_backward()
        if not self._spans:
            return None
        out = dict.fromkeys(PHASES, 0.0)
        for phase, start, end in self._spans:
            out[phase] += self.clock.seconds(start, end)
        out["rest"] += step_time_s - sum(out.values())
        return out


def grad_tensors(output) -> list[Any]:
    """The forward's outputs a backward can start from: every one that requires a gradient (a transformers
    model's loss and logits; TRL's fused head's log-probabilities, from which its compute_loss takes the
    loss; whichever the framework uses, its gradient is taken first)."""
    values = output.values() if hasattr(output, "values") else output if isinstance(output, (tuple, list)) else [output]
    return [v for v in values if getattr(v, "requires_grad", False)]
