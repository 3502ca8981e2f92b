"""The YAML specs users write: jobs (and, built on them, sweeps and endpoints).

Every model is `extra="forbid"`, typed and constrained. `parse_job_spec` turns pydantic's
errors into SpecError issues that read like
    resources.workers: must be >= 1, got 0
    ressources: unknown key; did you mean 'resources'?
The JSON Schema (`trainyard.schemas/job.json`) is generated from these models; a test
keeps the checked-in copy in step (`python -m trainyard.specs > ...`).

This module imports no torch.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from trainyard.errors import FieldIssue, SpecError, did_you_mean

__all__ = [
    "JobSpec",
    "Resources",
    "DeepSpeedSpec",
    "TrainingSpec",
    "CheckpointSpec",
    "FailureSpec",
    "TrackingSpec",
    "parse_job_spec",
    "load_yaml",
    "spec_issues_from_validation",
    "json_schemas",
    "EndpointSpec",
    "AutoscalingSpec",
    "BatchingSpec",
    "PromotionPolicy",
    "PromotionGates",
    "parse_endpoint_spec",
    "parse_promotion_policy",
    "SweepSpec",
    "SweepConfig",
    "parse_sweep_spec",
]

NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Resources(_Model):
    workers: int = Field(1, ge=1, description="Ray Train workers (one DeepSpeed rank each).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker.")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker; 0 trains on CPU.")
    accelerator_type: str | None = Field(
        None, description="Ray accelerator type or custom resource the workers need, e.g. 'A100'.")
    custom_resources: dict[str, float] = Field(
        default_factory=dict, description="Extra Ray resources per worker, e.g. {gpu_node: 1}.")
    cluster: str | None = Field(None, description="Registered cluster to run on; default: the scheduler picks.")

    @field_validator("custom_resources")
    @classmethod
    def _nonneg(cls, value: dict[str, float]) -> dict[str, float]:
        for key, amount in value.items():
            if amount < 0:
                raise ValueError(f"custom_resources.{key} must be >= 0, got {amount}")
        return value

    def per_worker(self) -> dict[str, float]:
        """Ray resources one worker asks for."""
        res = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            res["GPU"] = self.gpus_per_worker
        res.update(self.custom_resources)
        return res

    def total(self) -> dict[str, float]:
        return {k: v * self.workers for k, v in self.per_worker().items()}


class DeepSpeedSpec(_Model):
    zero_stage: Union[Literal["auto"], Literal[0, 1, 2, 3]] = Field(
        "auto", description="ZeRO stage 0-3, or auto (fastest that fits in worker memory).")
    offload: Literal["none", "cpu"] = Field("none", description="Offload optimizer state (and params in ZeRO-3) to CPU.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, fp32 on CPU.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_clipping: float = Field(0.0, ge=0, description="0 disables clipping.")

    @field_validator("zero_stage", mode="before")
    @classmethod
    def _stage(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if value not in ("auto", 0, 1, 2, 3) or isinstance(value, bool):
            raise ValueError(f"must be 0, 1, 2, 3 or 'auto', got {value!r}")
        return value


class TrainingSpec(_Model):
    epochs: int = Field(1, ge=1, description="Passes over the training set.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(32, ge=1, description="Micro-batch per worker.")
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    seed: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="Learning rate after warm-up: constant, or decayed to 0 at the last step "
                                "(cosine or linear).")
    warmup_steps: int = Field(0, ge=0, description="Optimizer steps of linear warm-up from lr/warmup_steps to lr.")
    eval_every_steps: int | None = Field(None, ge=1, description="Evaluate every N steps; default: each epoch.")
    log_every_steps: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _warmup(self) -> "TrainingSpec":
        if self.max_steps is not None and self.warmup_steps > self.max_steps:
            raise ValueError(
                f"training.warmup_steps: must be <= training.max_steps ({self.max_steps}), "
                f"got {self.warmup_steps}; warm up over fewer steps")
        return self

    def lr_at(self, step: int, total_steps: int) -> float:
        """The learning rate of optimizer step `step` (0-based) of `total_steps`.

        Depends on the step only, so a resumed run, or a sweep trial that Tune restores,
        continues the same curve.
        """
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.lr
        span = max(1, total_steps - self.warmup_steps)
        done = min(1.0, (step - self.warmup_steps) / span)
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * done))
        return self.lr * (1.0 - done)


class CheckpointSpec(_Model):
    every_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps; default: each epoch.")
    storage: str | None = Field(
        None, description="file:///path or s3://bucket/prefix; default: the server's storage.")
    endpoint_url: str | None = Field(
        None, description="S3 endpoint (for S3-compatible stores); default: the server's.")
    keep: int = Field(2, ge=1, description="Checkpoints kept per job.")

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.match(r"^(file://|s3://)", value):
            raise ValueError(f"must start with file:// or s3://, got {value!r}")
        if value.startswith("s3://"):
            bucket = value[5:].split("/", 1)[0]
            if len(bucket) < 3:
                raise ValueError(f"s3 bucket name must have at least 3 characters, got {bucket!r}")
        return value


class FailureSpec(_Model):
    max_failures: int = Field(0, ge=-1, description="Worker-group restarts from the last checkpoint; -1: unlimited.")


class TrackingSpec(_Model):
    experiment: str = Field("default", min_length=1)
    model_name: str | None = Field(None, description="Registered model name; default: the job name.")
    register_model: bool = Field(True, description="Register the final model in the MLflow Model Registry.")


class JobSpec(_Model):
    name: str = Field(..., pattern=NAME_RE, description="Lower-case letters, digits and '-', at most 63.")
    workload: str = Field(..., min_length=1, description="Family name (cnn, rnn, ...) or module:attribute.")
    project: str = Field("default", pattern=NAME_RE)
    priority: int = Field(0, ge=0, le=1000, description="Higher runs first.")
    description: str = ""
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    failure: FailureSpec = Field(default_factory=FailureSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    working_dir: str | None = Field(
        None, description="Local folder shipped to the cluster with the job (your own workload code).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables for the workers.")

    @model_validator(mode="after")
    def _cross(self) -> "JobSpec":
        if self.deepspeed.offload == "cpu" and self.resources.gpus_per_worker == 0:
            raise ValueError(
                "deepspeed.offload: 'cpu' only makes sense with GPU workers "
                "(resources.gpus_per_worker > 0); use offload: none on CPU")
        if self.deepspeed.precision in ("bf16", "fp16") and self.resources.gpus_per_worker == 0:
            raise ValueError(
                f"deepspeed.precision: {self.deepspeed.precision!r} needs GPU workers; "
                "CPU workers train in fp32 (use precision: auto or fp32)")
        return self

    def model_name(self) -> str:
        return self.tracking.model_name or self.name


# --------------------------------------------------------------------------- parsing

_PYDANTIC_PHRASES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "string_pattern_mismatch": "must match {pattern}",
    "string_too_short": "must not be empty",
    "missing": "is required",
}


def _loc_to_field(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("function-after[_cross(), JobSpec]",):
            continue
        elif isinstance(item, str) and ("[" in item and "(" in item):
            continue  # union/validator tags such as 'literal[...]'
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names valid at the parent of `loc` (for 'did you mean')."""
    current: Any = model
    for item in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(item)
        if info is None:
            return []
        current = info.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def spec_issues_from_validation(exc: ValidationError, model: type[BaseModel]) -> list[FieldIssue]:
    issues: list[FieldIssue] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        field = _loc_to_field(loc)
        etype = err.get("type", "")
        value = err.get("input")
        ctx = err.get("ctx") or {}
        if etype == "extra_forbidden":
            known = _known_keys(model, loc)
            key = str(loc[-1]) if loc else ""
            hint = did_you_mean(key, known)
            issues.append(FieldIssue(field, f"unknown key;{hint}" if hint else "unknown key",
                                     None, f"allowed keys here: {', '.join(known)}" if known else None))
            continue
        if etype in _PYDANTIC_PHRASES:
            try:
                phrase = _PYDANTIC_PHRASES[etype].format(**ctx)
            except (KeyError, IndexError):
                phrase = err.get("msg", "invalid")
            msg = phrase if etype == "missing" else f"{phrase}, got {value!r}"
            issues.append(FieldIssue(field, msg, value))
            continue
        msg = str(err.get("msg", "invalid"))
        msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
        if etype == "value_error" and ":" in msg.split(" ", 1)[0]:
            # model-level validators already name their field: "deepspeed.offload: ..."
            fname, _, rest = msg.partition(": ")
            issues.append(FieldIssue(fname, rest, value))
            continue
        if etype == "value_error" and not field and msg.split(" ", 1)[0].count(".") >= 1:
            fname, _, rest = msg.partition(" ")
            issues.append(FieldIssue(fname, rest, value))
            continue
        if "got" not in msg and etype not in ("value_error",):
            msg = f"{msg}, got {value!r}"
        issues.append(FieldIssue(field, msg, value))
    # keep one issue per field (a union reports each branch)
    seen: dict[str, FieldIssue] = {}
    for issue in issues:
        seen.setdefault(issue.field, issue)
    return list(seen.values())


def load_yaml(text: str, *, source: str = "spec") -> dict[str, Any]:
    """Parse YAML text into a mapping, with a located error when it is malformed."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"malformed YAML{where}: {problem}", source=source,
                        fix="check indentation and quoting") from None
    if data is None:
        raise SpecError("the spec is empty", source=source, fix="see examples/cnn.yaml")
    if not isinstance(data, dict):
        raise SpecError(f"the spec must be a mapping of keys, got a {type(data).__name__}",
                        source=source, fix="see examples/cnn.yaml")
    return data


def _as_mapping(spec: str | Path | Mapping[str, Any], source: str | None) -> tuple[dict, str]:
    if isinstance(spec, Path):
        try:
            text = spec.read_text()
        except OSError as exc:
            raise SpecError(f"cannot read {spec}: {exc.strerror}", source=str(spec)) from None
        return load_yaml(text, source=str(spec)), str(spec)
    if isinstance(spec, str):
        return load_yaml(spec, source=source or "spec"), source or "spec"
    if not isinstance(spec, Mapping):
        raise SpecError(f"the spec must be a mapping, got {type(spec).__name__}", source=source)
    return dict(spec), source or "spec"


def validate_workload_fields(spec: JobSpec, workload_meta: Any = None) -> list[FieldIssue]:
    """Checks that need what is known of the workload, imported from nowhere: a registered
    family's static metadata, or `workload_meta` that the client read on the user's machine
    (trainyard.families). A `module:attribute` without metadata is checked for syntax only;
    the runner imports and checks it when the job starts."""
    from trainyard.families import meta_for

    try:
        meta_for(spec.workload, supplied=workload_meta)
    except SpecError as exc:
        return exc.issues
    return []


def _parse_model(model: type[BaseModel], spec: str | Path | Mapping[str, Any], source: str | None,
                 *checks) -> Any:
    """Validate `spec` against `model`, then run each check (parsed -> issues) in order.

    Every parse_* function goes through here, so all specs report errors the same way."""
    data, source = _as_mapping(spec, source)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(spec_issues_from_validation(exc, model), source=source) from None
    for check in checks:
        issues = check(parsed)
        if issues:
            raise SpecError(issues, source=source)
    return parsed


def parse_job_spec(spec: str | Path | Mapping[str, Any], *, source: str | None = None,
                   check_workload: bool = True, workload_meta: Any = None) -> JobSpec:
    """Validate a job spec given as YAML text, a path, or a mapping.

    `workload_meta`: what the client read of a user's own family (trainyard.families)."""
    def workload_issues(job: JobSpec) -> list[FieldIssue]:
        return validate_workload_fields(job, workload_meta)

    return _parse_model(JobSpec, spec, source, *([workload_issues] if check_workload else []))


# --------------------------------------------------------------------------- endpoints & promotion
#
# PromotionPolicy is THE one promotion model. The serving engineer owns it (trainyard.serving
# evaluates it); a sweep's `promote:` block and `trainyard models promote` both use it as-is:
#     class SweepSpec(...): promote: PromotionPolicy | None = None
# Add fields here rather than defining a second model.


class PromotionGates(_Model):
    """What a canary must hold over its observation window to become champion."""

    max_error_rate: float = Field(
        0.01, ge=0, lt=1, description="Highest fraction of failed canary requests (0 <= x < 1).")
    max_p99_latency_ratio: float = Field(
        1.5, ge=1.0, le=100, description="Canary p99 latency must stay <= this x the champion's p99 (>= 1).")
    min_requests: int = Field(
        50, ge=1, description="Canary requests needed before a verdict; too few by max_wait_s rolls back.")


class PromotionPolicy(_Model):
    """When and how a `candidate` replaces the `champion` (a sweep's `promote:` block)."""

    metric: str | None = Field(None, description="Registry metric to compare; default: the family's primary metric.")
    mode: Literal["max", "min"] | None = Field(None, description="Which way is better; default: the family's.")
    min_improvement: float = Field(
        0.0, ge=0, description="Candidate must beat the champion by at least this much (absolute).")
    canary_weight: float = Field(
        0.1, gt=0, lt=1, description="Traffic share of the canary during observation (0 < x < 1).")
    window_s: float = Field(60.0, gt=0, le=86400, description="Observation window of the canary, seconds.")
    max_wait_s: float | None = Field(
        None, gt=0, description="Longest wait for gates.min_requests; default: 3 x window_s.")
    endpoint: str | None = Field(None, pattern=NAME_RE, description="Endpoint to promote on; default: the model name.")
    gates: PromotionGates = Field(default_factory=PromotionGates)

    @field_validator("max_wait_s")
    @classmethod
    def _waits(cls, value: float | None, info: ValidationInfo) -> float | None:
        window = info.data.get("window_s")
        if value is not None and window is not None and value < window:
            raise ValueError(f"must be >= window_s ({window}), got {value}; "
                             "the canary could never finish its window")
        return value

    def wait_limit(self) -> float:
        return self.max_wait_s if self.max_wait_s is not None else 3 * self.window_s


class AutoscalingSpec(_Model):
    min_replicas: int = Field(1, ge=0, description="Replicas kept when idle (0 scales to zero).")
    max_replicas: int = Field(2, ge=1, le=1000)
    target_ongoing_requests: float = Field(2.0, gt=0, description="In-flight requests per replica Serve aims for.")
    upscale_delay_s: float = Field(2.0, ge=0)
    downscale_delay_s: float = Field(10.0, ge=0)

    @field_validator("max_replicas")
    @classmethod
    def _bounds(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if low is not None and value < low:
            raise ValueError(f"must be >= min_replicas ({low}), got {value}")
        return value


class BatchingSpec(_Model):
    enabled: bool | None = Field(None, description="Batch requests (serve.batch); default: on where the family supports it.")
    max_batch_size: int = Field(16, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, le=10, description="0: batch only what queued up meanwhile (no added latency when idle).")


class EndpointSpec(_Model):
    """An endpoint: one registered model, every live version behind one route."""

    name: str | None = Field(None, pattern=NAME_RE, description="Endpoint name; default: the model name.")
    model: str = Field(..., min_length=1, description="Registered model name in MLflow.")
    version: str | None = Field(None, description="Model version to serve.")
    alias: str | None = Field(None, description="Registry alias to serve (default 'champion', else the latest version).")
    cluster: str | None = Field(None, description="Registered cluster; default: the server's default cluster.")
    split: Literal["replica", "deployments"] = Field(
        "replica", description="replica: each replica holds every live version and picks by weight "
                               "(no extra hop); deployments: each version is its own Serve application "
                               "behind a router that splits by weight (one extra hop; for models too "
                               "large to hold twice). Versions come and go without touching the others.")
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    cpus_per_replica: float = Field(1.0, gt=0)
    gpus_per_replica: float = Field(0.0, ge=0)
    max_ongoing_requests: int = Field(16, ge=1)
    fallback_on_error: bool = Field(
        True, description="A canary that raises is answered by the stable version (the error still counts).")
    promotion: PromotionPolicy | None = Field(None, description="Default policy for promotions on this endpoint.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_selector(self) -> "EndpointSpec":
        if self.version is not None and self.alias is not None:
            raise ValueError(f"version: give version or alias, not both (version={self.version!r}, "
                             f"alias={self.alias!r})")
        if self.version is not None and not str(self.version).isdigit():
            raise ValueError(f"version: must be a registry version number, got {self.version!r}")
        return self

    def endpoint_name(self) -> str:
        return self.name or self.model


def parse_endpoint_spec(spec: str | Path | Mapping[str, Any], *, source: str | None = None) -> EndpointSpec:
    """Validate an endpoint spec given as YAML text, a path, or a mapping."""
    return _parse_model(EndpointSpec, spec, source)


def parse_promotion_policy(spec: str | Path | Mapping[str, Any] | None, *,
                           source: str | None = None) -> PromotionPolicy:
    """Validate a promotion policy (a sweep's `promote:` block); None gives the defaults."""
    if spec is None:
        return PromotionPolicy()
    return _parse_model(PromotionPolicy, spec, source)


# --------------------------------------------------------------------------- sweeps
#
# A sweep spec is a job spec (every key above: the base job that each trial runs) plus a
# `sweep:` block (what to search, how) and an optional `promote:` block (stored and
# validated now, acted on by the promotion feature). The search space itself is checked
# by trainyard.sweeps.validate, which needs the workload (metrics, default space).

SEARCH_ALGORITHMS = ("random", "grid", "bayesian")
SWEEP_SCHEDULERS = ("fifo", "asha", "pbt")


def _one_of(value: Any, known: tuple[str, ...], what: str) -> str:
    text = str(value).strip().lower()
    if text not in known:
        hint = did_you_mean(text, known)
        raise ValueError(f"unknown {what} {value!r};{hint} known: {', '.join(known)}")
    return text


class AshaSpec(_Model):
    grace_period: int = Field(1, ge=1, description="Evaluations every trial gets before it can be stopped.")
    reduction_factor: float = Field(2.0, gt=1, description="Keep 1/reduction_factor of trials at each rung.")
    max_t: int | None = Field(None, ge=1, description="Evaluations of the longest trial; default: 100.")
    strategy: Literal["stop", "promote"] = Field(
        "stop", description="stop: Ray's asynchronous ASHA, which decides when a trial reaches a rung, against "
                            "what the rung has seen so far (the first trials always go on). promote: ASHA as "
                            "published: a trial waits (paused, checkpointed) at each rung until it ranks in "
                            "the rung's top 1/reduction_factor; every evaluation then checkpoints.")


class PbtSpec(_Model):
    perturbation_interval: int = Field(2, ge=1, description="Evaluations between exploit/explore steps.")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="Bottom fraction copies the top fraction.")
    resample_probability: float = Field(0.25, ge=0, le=1)
    mutate: list[str] | None = Field(
        None, description="search_space keys PBT may change mid-training; default: the training.* keys.")
    synch: bool = Field(False, description="Synchronous PBT: all trials pause at each interval, then exploit. "
                                           "Slower, but exploits even when trials start far apart.")


class SweepConfig(_Model):
    search_space: dict[str, Any] | None = Field(
        None, description="'section.key' -> {choice|grid|uniform|loguniform|randint|quniform: [...]}; "
                          "default: the family's search space.")
    algorithm: str = Field("random", description="random | grid | bayesian (Optuna TPE).")
    scheduler: str = Field("fifo", description="fifo | asha | pbt.")
    metric: str | None = Field(None, description="Metric to optimise; default: the family's.")
    mode: Literal["max", "min"] | None = Field(
        None, description="Default: the family's mode, only when metric is the family's metric.")
    num_trials: int | None = Field(None, ge=1, description="Trials in all; default: the grid size, or 8.")
    max_concurrent_trials: int = Field(2, ge=1)
    time_budget_s: float | None = Field(None, gt=0, description="Stop starting/continuing trials after this.")
    seed: int | None = Field(0, ge=0, description="Seed of the search algorithm.")
    asha: AshaSpec = Field(default_factory=AshaSpec)
    pbt: PbtSpec = Field(default_factory=PbtSpec)
    max_failures: int = Field(1, ge=0, description="Retries of a failed trial (from its last checkpoint).")
    trial_executor: Literal["auto", "train", "inline"] = Field(
        "auto", description="How a trial runs its workers. train: a Ray Train TorchTrainer gang per trial "
                            "(any resources.workers). inline: the same train loop and DeepSpeed engine (world "
                            "size 1) inside the Tune trial actor, which is reused across trials; only for "
                            "resources.workers: 1, and it saves the worker group's start (tens of seconds on "
                            "CPU) per trial. auto: inline for 1 worker, train otherwise.")

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, value: str) -> str:
        return _one_of(value, SEARCH_ALGORITHMS, "search algorithm")

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value: str) -> str:
        return _one_of(value, SWEEP_SCHEDULERS, "scheduler")


class SweepSpec(JobSpec):
    """A job spec plus `sweep:` (and `promote:`). Each trial runs the job with one config."""

    sweep: SweepConfig = Field(default_factory=SweepConfig)
    promote: PromotionPolicy | None = Field(
        None, description="Promotion of the winner (stored and validated; acted on by promotion).")

    @model_validator(mode="after")
    def _executor(self) -> "SweepSpec":
        if self.sweep.trial_executor == "inline" and self.resources.workers != 1:
            raise ValueError(
                f"sweep.trial_executor: 'inline' runs a trial in one process, so resources.workers must be 1, "
                f"got {self.resources.workers}; use trial_executor: train (or auto) for gangs of workers")
        return self

    def trial_executor(self) -> str:
        """The executor trials use: 'train' (TorchTrainer gang) or 'inline' (in the Tune actor)."""
        chosen = self.sweep.trial_executor
        if chosen == "auto":
            return "inline" if self.resources.workers == 1 else "train"
        return chosen

    def job_spec(self) -> JobSpec:
        """The base job, without the sweep's own blocks."""
        data = self.model_dump(exclude={"sweep", "promote"})
        return JobSpec.model_validate(data)


def parse_sweep_spec(spec: str | Path | Mapping[str, Any], *, source: str | None = None,
                     check_workload: bool = True, workload_meta: Any = None) -> SweepSpec:
    """Validate a sweep spec (YAML text, path or mapping), search space included.

    `workload_meta`: what the client read of a user's own family (trainyard.families)."""
    def workload_issues(sweep: SweepSpec) -> list[FieldIssue]:
        return validate_workload_fields(sweep, workload_meta)

    def search_space_issues(sweep: SweepSpec) -> list[FieldIssue]:
        from trainyard.families import meta_for
        from trainyard.sweeps.validate import sweep_issues

        return sweep_issues(sweep, meta_for(sweep.workload, supplied=workload_meta))

    checks = [workload_issues, search_space_issues] if check_workload else []
    return _parse_model(SweepSpec, spec, source, *checks)


def json_schemas() -> dict[str, dict]:
    """The JSON Schemas of the user-facing specs, by name."""
    return {"job": JobSpec.model_json_schema(), "endpoint": EndpointSpec.model_json_schema(),
            "sweep": SweepSpec.model_json_schema()}


if __name__ == "__main__":  # python -m trainyard.specs  -> prints the schemas
    print(json.dumps(json_schemas(), indent=2, sort_keys=True))

