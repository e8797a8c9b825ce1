"""A published run replayed here, and every way this run differs from it.

A scenario that replays a published run (`published:` in conf/scenario/seed-*.yaml) states what was
published: the values its file sets (each cited to a line of the source), the framework and model its defaults
choose, and under `published:` the framework release, the rows, the model, the hardware and what the harness
cannot express. `differences` diffs the run's effective job against all of it and names each difference's
cause: this host, the command line, a stand-in (random weights, the bundled sample), another release, a value
the harness cannot express. A run is "as published" only when the list is empty.

On a CPU the values that need a GPU (4-bit weights, an 8-bit optimizer) are replaced so the run can go on; so
are half precision and gradient checkpointing in the worker. Outside a published scenario nothing is replaced:
such a value skips the run with the reason (bench.sweep.app.host_reason).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bench.core.config import Config, conf_dir
from bench.core.spec import DatasetSpec, TrainSpec

# What a CPU host cannot do of a published run, and what the run does instead (field, replacement).
GPU_ONLY = {
    "quant": ("none", lambda t: t.quant != "none", "bitsandbytes needs a CUDA GPU; trained without quantisation"),
    "optimizer": ("adamw_torch", lambda t: t.optimizer.endswith("8bit"),
                  "bitsandbytes' 8-bit optimizers need a CUDA GPU; trained with adamw_torch"),
}  # fmt: skip
HOST = "no GPU on this host"
COMMAND_LINE = "set on the command line"
NOT_STATED = ("published", "claims", "defaults")  # a scenario's keys that are not job values


@dataclass(frozen=True)
class Difference:
    key: str
    published: Any
    used: Any
    cause: str

    def text(self) -> str:
        return f"{self.key}: published {shown(self.published)}, here {shown(self.used)} ({self.cause})"


def shown(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def as_published(cfg: Config, train: TrainSpec, gpu: bool) -> tuple[TrainSpec, list[str]]:
    """The training values a replayed published run uses here: those this host cannot honour replaced (and
    named), every other as configured. Without `published`, nothing changes."""
    if cfg.published is None or gpu:
        return train, []
    replaced = []
    for name, (instead, unusable, why) in GPU_ONLY.items():
        if unusable(train):
            replaced.append(f"train.{name}={getattr(train, name)}: {why}")
            train = dataclasses.replace(train, **{name: instead})
    return train, replaced


def effective(train: TrainSpec, gpu: bool) -> TrainSpec:
    """What the worker trains with on this host: on a CPU fp32 and no gradient checkpointing."""
    if gpu:
        return train
    return dataclasses.replace(train, precision="fp32" if train.precision in ("bf16", "fp16") else train.precision,
                               gradient_checkpointing=False)  # fmt: skip


def stated(scenario: str) -> dict[str, Any]:
    """What a scenario states as published: every value its file sets (flattened, `train.lora.r`) and the
    framework and model its defaults choose."""
    node = OmegaConf.to_container(OmegaConf.load(conf_dir() / "scenario" / f"{scenario}.yaml"), resolve=False)
    out = {}
    for entry in node.get("defaults", []):
        for key, value in (entry.items() if isinstance(entry, dict) else []):
            out[key.removeprefix("override ").strip("/ ")] = value
    out |= flatten({k: v for k, v in node.items() if k not in NOT_STATED})
    return out


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def used_value(cfg: Config, train: TrainSpec, key: str) -> Any:
    """The run's value of a scenario key (`train.*` as trained here)."""
    if key in ("framework", "model"):
        return getattr(cfg, key).name
    head, *rest = key.split(".")
    value: Any = train if head == "train" else getattr(cfg, head)
    for name in rest:
        value = getattr(value, name)
    return list(value) if isinstance(value, tuple) else value


def overridden(key: str, overrides: list[str]) -> bool:
    names = [o.lstrip("+~").partition("=")[0] for o in overrides]
    return any(key == n or key.startswith(n + ".") for n in names)


def job_differences(cfg: Config, scenario: str, gpu: bool, overrides: list[str]) -> list[Difference]:
    """The scenario's stated values against the run's: each difference with its cause."""
    configured = cfg.train
    trained = effective(as_published(cfg, configured, gpu)[0], gpu)
    out = []
    for key, published in stated(scenario).items():
        if key == "model":  # the scenario's model group stands in for published.model (model_difference)
            continue
        used = used_value(cfg, trained, key)
        if used == published or (isinstance(published, float | int) and used == float(published)):
            continue
        if overridden(key, overrides):
            cause = COMMAND_LINE
        elif key.startswith("train.") and used_value(cfg, configured, key) != used:
            cause = HOST
        else:
            cause = "differs"
        out.append(Difference(key, published, used, cause))
    return out


def release_difference(cfg: Config) -> Difference | None:
    p, fw = cfg.published, cfg.framework
    if p.release is None:
        return None
    if fw.source:
        return Difference("framework.version", p.release, f"{fw.name} built from {fw.source}", "a source build")
    if fw.version != p.release:
        return Difference("framework.version", p.release, fw.version, "another release")
    return None


def data_difference(cfg: Config, dataset: DatasetSpec, rows: int) -> Difference | None:
    """The published rows (published.rows: the file and how many of its first rows) against the selection."""
    p = cfg.published
    if p.rows is None:
        return None
    files = [Path(f).name for f in dataset.source_files]
    same = files == [p.data_file] and dataset.shuffle_seed is None and rows == p.rows
    if same:
        return None
    published = f"the first {p.rows:,} rows of {p.data_file}"
    if dataset.name == "medical-sample":
        return Difference("data", published, f"{rows:,} bundled rows", "a stand-in: dataset.path is not set")
    how = "the first" if dataset.shuffle_seed is None else f"a sample (seed {dataset.shuffle_seed}) of"
    return Difference("data", published, f"{how} {rows:,} rows of {', '.join(files)}", COMMAND_LINE)


def model_difference(cfg: Config) -> Difference | None:
    p, m = cfg.published, cfg.model
    if p.model is None:
        return None
    if m.source == "random":
        return Difference("model", p.model, f"random weights of its architecture ({m.name})", "a stand-in")
    if (m.path or m.name) != p.model and Path(m.path or "").name != Path(p.model).name:
        return Difference("model", p.model, m.path or m.name, COMMAND_LINE)
    return None


def hardware_difference(cfg: Config, host_gpus: list[str]) -> Difference | None:
    p = cfg.published
    if p.hardware is None:
        return None
    if not host_gpus:
        return Difference("hardware", p.hardware, "a CPU", HOST)
    if p.gpu is None or not any(p.gpu.lower() in g.lower() for g in host_gpus):
        return Difference("hardware", p.hardware, ", ".join(host_gpus), "another GPU")
    return None


def differences(cfg: Config, scenario: str, dataset: DatasetSpec, rows: int, overrides: list[str],
                host_gpus: list[str]) -> list[Difference]:  # fmt: skip
    """Every way this run differs from the publication it replays, whatever the cause; empty: as published."""
    out = job_differences(cfg, scenario, bool(host_gpus), overrides)
    out += [d for d in (release_difference(cfg), data_difference(cfg, dataset, rows), model_difference(cfg),
                        hardware_difference(cfg, host_gpus)) if d is not None]  # fmt: skip
    cannot = cfg.published.not_expressible
    out += [Difference("not expressible", text, "-", "the harness cannot set it") for text in cannot]
    return out


def record(cfg: Config, scenario: str | None, dataset: DatasetSpec, rows: int, overrides: list[str],
           host_gpus: list[str]) -> dict[str, Any] | None:  # fmt: skip
    """The summary's account of a replayed published run: its source and every difference from it."""
    if cfg.published is None or scenario is None:
        return None
    found = differences(cfg, scenario, dataset, rows, overrides, host_gpus)
    p = cfg.published
    return {"source": p.source, "as_published": not found, "left_out": [d.text() for d in found],
            "train_s": p.train_s, "peak_memory_gb": p.peak_memory_gb,
            "unlike": [d.text() for d in found if d.key in ("hardware", "data")]}  # fmt: skip
