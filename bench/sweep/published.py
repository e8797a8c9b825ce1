"""A published run replayed here: the scenario's values as published, less what this host cannot honour.

A scenario that replays a published run (`published: {source}`, conf/scenario/seed-*.yaml) runs on any host:
values that need a GPU (4-bit weights, an 8-bit optimizer) are left out on a CPU and listed, with random
weights standing in for a published model's and CPU precision, in the run's summary (`published.left_out`);
the report marks such a run "not as published". Outside a published scenario nothing is left out: a value
the host cannot honour skips the run with the reason (bench.sweep.app.host_reason).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.core.config import Config
from bench.core.spec import TrainSpec

# What a CPU host cannot do of a published run, and what the run does instead (field, replacement).
GPU_ONLY = {
    "quant": ("none", lambda t: t.quant != "none", "bitsandbytes needs a CUDA GPU; trained without quantisation"),
    "optimizer": ("adamw_torch", lambda t: t.optimizer.endswith("8bit"),
                  "bitsandbytes' 8-bit optimizers need a CUDA GPU; trained with adamw_torch"),
}  # fmt: skip


def as_published(cfg: Config, train: TrainSpec, gpu: bool) -> tuple[TrainSpec, list[str]]:
    """A published run replayed here: the values this host cannot honour are left out (listed), every other
    value as published. Without `published`, nothing changes: such values skip the run with the reason."""
    if cfg.published is None:
        return train, []
    left_out = []
    if cfg.model.source == "random":
        left_out.append(f"model={cfg.model.name}: random weights of the architecture stand in for the published model")
    if not gpu:
        for name, (instead, unusable, why) in GPU_ONLY.items():
            if unusable(train):
                left_out.append(f"train.{name}={getattr(train, name)}: {why}")
                train = dataclasses.replace(train, **{name: instead})
        if train.precision in ("bf16", "fp16"):
            left_out.append(f"train.precision={train.precision}: fp32 on a CPU")
        if train.gradient_checkpointing:
            left_out.append("train.gradient_checkpointing=true: off on a CPU, where it only costs time")
    return train, left_out


def record(cfg: Config, gpu: bool) -> dict[str, Any] | None:
    """The summary's account of a replayed published run: its source and what was left out here."""
    if cfg.published is None:
        return None
    _, left_out = as_published(cfg, cfg.train, gpu)
    return {"source": cfg.published.source, "as_published": not left_out, "left_out": left_out}
