"""The typed config at the edge: every group of the composed Hydra config validated once, into dataclasses.

conf/ holds the only defaults; this module says what each key means (types, enums) and rejects unknown keys
with the list of known ones. It also knows where conf/ is (beside the package in a checkout, inside it once
installed) and lists the registered frameworks: one conf/framework/<name>.yaml each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from bench.core import metrics
from bench.core.paths import conf_dir  # conf/'s location, shared with the worker
from bench.core.results import safe_name
from bench.core.spec import (
    EvalSpec,
    ModelSource,
    OnBadRow,
    ProfileSpec,
    SpecError,
    TokenizeMode,
    TrainSpec,
    from_mapping,
)


def conf_default(key: str) -> Any:
    """A default of conf/config.yaml by its dotted key (`report.baseline`), resolved on its own (environment
    variables included), for entry points that do not compose a Hydra config: the conf stays the one place."""
    return OmegaConf.select(OmegaConf.load(conf_dir() / "config.yaml"), key, throw_on_missing=True)


def default_baseline() -> str:
    """The report's baseline framework when none is given: conf/config.yaml's report.baseline."""
    return str(conf_default("report.baseline"))


def default_cache_dir() -> Path:
    """Framework environments and built models when no composed config says: conf/config.yaml's cache_dir
    (SFTBENCH_CACHE, else its default)."""
    return Path(str(conf_default("cache_dir"))).expanduser()


def register_resolvers() -> None:
    """Resolvers the sweep directory layouts (conf/config.yaml, conf/frontier.yaml) use; bench.run calls it
    when imported, which every entry point and every submitit job process does before composing a config."""
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)  # one value per sweep
    OmegaConf.register_new_resolver("safe", safe_name, replace=True)
    OmegaConf.register_new_resolver("budget", budget_dir, replace=True)
    OmegaConf.register_new_resolver("frameworks", sweep_frameworks, replace=True)


def sweep_frameworks(baseline: str) -> str:
    """The default sweep: every registered framework (conf/framework/*.yaml), the report's baseline first."""
    names = sorted(frameworks())
    return ",".join(sorted(names, key=lambda name: name != baseline))


def budget_dir(budget_gb: Any) -> str:
    """A frontier job's directory suffix: `24gb`, or `nobudget` (never `Nonegb`)."""
    return "nobudget" if budget_gb is None else safe_name(f"{budget_gb:g}gb")


@dataclass(frozen=True)
class FrameworkConfig:
    name: str
    version: str
    runner: str  # the module that translates the spec into this framework's calls (bench/worker/runners/<name>.py)
    distribution: str  # the package whose installed version is the framework's version
    packages: list[str]  # further packages whose versions a run records (kernels, companions)
    needs_gpu: bool  # recorded as skipped, before building its environment, on a host without one
    multi_gpu: bool  # takes train.num_gpus > 1 (torchrun); otherwise such runs are skipped
    requirements: list[str]
    companions: dict[str, list[str]]
    python: str | None
    env: dict[str, Any]
    # A directory or git+URL@REF installed instead of the released version (bench/sweep/source.py): the system under
    # test becomes that source. Only ever set explicitly, on the command line or in a conf of your own.
    source: str | None
    # train.kernels choice -> what its environment adds (liger: [liger-kernel==X]); a framework without
    # kernel switches declares none.
    kernel_requirements: dict[str, list[str]] = field(default_factory=dict)
    # The framework's own per-token training metrics, and whether to compute them: true or false where it has
    # a switch the runner drives (TRL's entropy and mean token accuracy), null where it computes none.
    token_metrics: bool | None = None
    token_metrics_note: str = ""  # where it has none: what it computes per step instead (the refusal says)
    # The releases its runner drives (a version specifier, ">=0.24"), and why; null: not declared
    drives: str | None = None
    drives_note: str = ""

    def __post_init__(self) -> None:
        if self.drives and not self.source and not driven(self.version, self.drives):
            raise SpecError(f"framework.version={self.version}: the {self.name} runner drives releases {self.drives}"
                            f" ({self.drives_note})")  # fmt: skip
        check_requirements("framework.requirements", self.requirements)
        for k, rs in self.companions.items():
            check_requirements(f"framework.companions.{k}", rs)
        for k, rs in self.kernel_requirements.items():
            check_requirements(f"framework.kernel_requirements.{k}", rs)


def driven(version: str, drives: str) -> bool:
    """Whether a release is one a runner drives (`drives`: a version specifier); an unparsable version is not."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) in SpecifierSet(drives)
    except InvalidVersion:
        return False


def check_requirements(where: str, requirements: list[str]) -> None:
    """What reaches pip from a config: requirement strings only, never pip options (`--index-url`, `-r FILE`,
    `-e PATH`), which would reach other indexes or read local files. A config from someone else installs what
    it lists and nothing else."""
    for requirement in requirements:
        if requirement.strip().startswith("-"):
            raise SpecError(f"{where}: {requirement!r} is a pip option; only requirement strings (name==version)")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    source: ModelSource
    path: str | None
    trust_remote_code: bool
    config: dict[str, Any]


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    path: str | None
    train_glob: str
    eval_glob: str
    eval_path: str | None
    max_rows: int | None
    shuffle_seed: int | None
    on_bad_row: OnBadRow
    system_prompt: str
    prompt_format: str
    eos: bool
    tokenize: TokenizeMode
    fill_to: int | None
    max_row_bytes: int
    hub_id: str | None
    hub_files: dict[str, str] | None


@dataclass(frozen=True)
class SamplerConfig:
    interval_s: float
    gpu: bool


@dataclass(frozen=True)
class FrontierConfig:
    axis: Literal["seq_len", "batch"]
    vram_budget_gb: float | None
    start: int
    limit: int
    granularity: int
    max_probes: int
    probe_steps: int


@dataclass(frozen=True)
class ReportConfig:
    baseline: str


@dataclass(frozen=True)
class PublishedConfig:
    """A scenario that replays a published run: where it comes from. Values this host cannot honour (4-bit
    weights or an 8-bit optimizer without a GPU) are left out and listed, and the run is "not as published"."""

    source: str
    release: str | None = None  # the framework release it ran
    rows: int | None = None  # it trained on the first `rows` rows of `data_file`
    data_file: str | None = None
    model: str | None = None  # the model it trained (its hub name)
    hardware: str | None = None  # the machine it ran on, as published
    gpu: str | None = None  # that machine's GPU, as a host's GPU name contains it (RTX 4070)
    not_expressible: list[str] = field(default_factory=list)  # what it did that no job value can say
    train_s: float | None = None  # its published training time (wall clock, seconds)
    peak_memory_gb: float | None = None  # its published peak GPU memory


@dataclass(frozen=True)
class ClaimConfig:
    """A published claim a scenario's sweep can check: `candidate` is `ratio` times `baseline` on `metric`
    (systems by name: trl, unsloth, trl+liger; the metric from bench/core/metrics.py)."""

    metric: str
    baseline: str
    candidate: str
    ratio: float
    source: str

    def __post_init__(self) -> None:
        if self.metric not in metrics.METRICS:
            raise SpecError(f"claims: metric {self.metric!r} is not declared in bench/core/metrics.py")
        if self.ratio <= 0:
            raise SpecError(f"claims: ratio {self.ratio} for {self.metric}: must be > 0")


@dataclass(frozen=True)
class Config:
    framework: FrameworkConfig
    model: ModelConfig
    dataset: DatasetConfig
    train: TrainSpec
    eval: EvalSpec
    profile: ProfileSpec
    sampler: SamplerConfig
    report: ReportConfig
    worker_requirements: list[str]
    # train.kernels package -> its version: the one pin every framework's kernel_requirements refers to
    # (${kernels.liger} in conf/framework/*.yaml); only ever read through those lists.
    kernels: dict[str, str]
    timeout_s: float
    skip_steps: int
    cache_dir: str
    results_dir: str
    resume: bool
    published: PublishedConfig | None  # set by a scenario that replays a published run
    claims: list[ClaimConfig]  # set by a scenario that carries a published claim
    frontier: FrontierConfig | None = field(default=None)  # python -m bench.frontier only

    def __post_init__(self) -> None:
        check_requirements("worker_requirements", self.worker_requirements)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser()


def validate(cfg: DictConfig) -> Config:
    """The composed config, every group type-checked; a bad value raises SpecError naming its key
    (`train.lr='abc': expected float`), an unknown key the keys its group knows."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    return from_mapping(Config, data, "")


def frameworks() -> dict[str, dict[str, Any]]:
    """Every registered framework (conf/framework/*.yaml) as declared, unresolved: name -> its facts."""
    found = {}
    for path in sorted((conf_dir() / "framework").glob("*.yaml")):
        node = OmegaConf.load(path)
        keys = ("runner", "distribution", "packages", "needs_gpu", "multi_gpu")
        found[str(node.name)] = {k: node[k] for k in keys} | {k: node.get(k) for k in ("token_metrics", "drives",
                                                                                      "drives_note")}  # fmt: skip
    return found
