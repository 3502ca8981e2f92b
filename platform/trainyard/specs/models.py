"""The spec models: what a job, a sweep and an endpoint spec may say. No parsing here.

Every model is `extra="forbid"` and strict: a string is never read as a number, nor a
boolean as an integer (`workers: "2"`, `lr: true` are errors); NaN and infinity are
refused; every integer, string, list and mapping has a bound (trainyard.specs.limits).
Cross-field rules live on the models. Parsing (YAML, size caps, the checks that need a
workload) is trainyard.specs.parsing; this module imports neither YAML nor workloads.

This module imports no torch.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Mapping, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from trainyard.errors import FieldIssue, did_you_mean
from trainyard.specs import limits as L
from trainyard.specs import storage as _storage
from trainyard.specs.issues import spec_issues_from_validation

__all__ = [
    "NAME_RE", "JobSpec", "Resources", "WorkerRange", "worker_bounds", "gas_for_world", "elastic_batch_problem", "DeepSpeedSpec", "TrainingSpec", "CheckpointSpec", "FailureSpec",
    "TrackingSpec", "EndpointSpec", "AutoscalingSpec", "BatchingSpec", "PromotionPolicy", "PromotionGates",
    "SweepSpec", "SweepConfig", "AshaSpec", "PbtSpec", "SEARCH_ALGORITHMS", "SWEEP_SCHEDULERS", "json_schemas",
]

NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
ENV_KEY_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"
# a family name, or an absolute module path and attribute: no relative imports, no paths
WORKLOAD_RE = re.compile(r"^(?:[a-z0-9][a-z0-9_-]{0,62}|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:(?:[A-Za-z_]\w*)?)$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)

    @classmethod
    def issues_for(cls, data: Mapping[str, Any]) -> list[FieldIssue]:
        """The problems `data` has as this model (empty when it validates)."""
        try:
            cls.model_validate(data)
        except ValidationError as exc:
            return spec_issues_from_validation(exc, cls)
        return []


class WorkerRange(_Model):
    """An elastic job's worker count: it starts with what it gets, at least `min`, and grows to `max`."""

    min: int = Field(ge=1, le=L.MAX_WORKERS, description="Fewest workers the job runs with (it is admitted at this).")
    max: int = Field(ge=1, le=L.MAX_WORKERS, description="Most workers it grows to when nodes are free.")

    @model_validator(mode="after")
    def _ordered(self) -> "WorkerRange":
        if self.min > self.max:
            raise ValueError(f"resources.workers: min ({self.min}) is above max ({self.max}); "
                             f"write {{min: {self.max}, max: {self.min}}}")
        return self


def _workers_kind(value: Any) -> str:
    # Choose the union's branch from the value's shape, so that an error comes from one branch
    # only ('must be an integer' for "2", 'min: must be >= 1' for {min: 0}), never from both.
    # The tags carry brackets so that issues._loc_to_field leaves them out of the field name.
    return "range[min,max]" if isinstance(value, (Mapping, WorkerRange)) else "fixed[int]"


def worker_bounds(workers: Any) -> tuple[int, int]:
    """(min, max) of a `resources.workers` value: a number (both equal), a {min, max} range (a
    WorkerRange or, in a stored spec, a plain mapping; a missing max is min), or absent (1).
    The one rule for the spec models, the scheduler's views and the cost record."""
    if workers is None:
        return 1, 1
    if isinstance(workers, WorkerRange):
        return workers.min, workers.max
    if isinstance(workers, Mapping):
        low = int(workers.get("min", 1))
        return low, int(workers.get("max", low))
    return int(workers), int(workers)


Workers = Annotated[
    Union[Annotated[int, Tag("fixed[int]"), Field(ge=1, le=L.MAX_WORKERS)],
          Annotated[WorkerRange, Tag("range[min,max]")]],
    Discriminator(_workers_kind),
]


class Resources(_Model):
    workers: Workers = Field(
        1, description="Ray Train workers (one DeepSpeed rank each): a number, or {min, max} for an elastic "
                       "job that starts with at least min and grows to max as nodes come and go.")
    cpus_per_worker: float = Field(1.0, ge=L.MIN_RESOURCE, le=1024, description="CPUs reserved per worker.")
    gpus_per_worker: float = Field(0.0, ge=0, le=64, description="GPUs per worker; 0 trains on CPU.")
    accelerator_type: str | None = Field(
        None, min_length=1, max_length=L.MAX_TEXT,
        description="Ray accelerator type or custom resource the workers need, e.g. 'A100'.")
    custom_resources: dict[str, float] = Field(
        default_factory=dict, max_length=32, description="Extra Ray resources per worker, e.g. {gpu_node: 1}.")
    cluster: str | None = Field(None, min_length=1, max_length=L.MAX_TEXT,
                                description="Registered cluster to run on; default: the scheduler picks.")

    @field_validator("gpus_per_worker")
    @classmethod
    def _gpus(cls, value: float) -> float:
        if 0 < value < L.MIN_RESOURCE:
            raise ValueError(f"must be 0 or >= {L.MIN_RESOURCE} (Ray's smallest share), got {value:g}")
        return value

    @field_validator("custom_resources")
    @classmethod
    def _nonneg(cls, value: dict[str, float]) -> dict[str, float]:
        for key, amount in value.items():
            if not key or len(key) > L.MAX_TEXT:
                raise ValueError(f"resources.custom_resources: names must have 1 to {L.MAX_TEXT} characters")
            if amount < 0 or amount > 1e6:
                raise ValueError(f"resources.custom_resources.{key}: must be between 0 and 1000000, got {amount:g}")
        return value

    def per_worker(self) -> dict[str, float]:
        """Ray resources one worker asks for."""
        res = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            res["GPU"] = self.gpus_per_worker
        res.update(self.custom_resources)
        return res

    @property
    def min_workers(self) -> int:
        return worker_bounds(self.workers)[0]

    @property
    def max_workers(self) -> int:
        return worker_bounds(self.workers)[1]

    @property
    def elastic(self) -> bool:
        """True when the worker count may change while the job runs."""
        return self.min_workers < self.max_workers

    def total(self) -> dict[str, float]:
        """What the job holds at its largest."""
        return {k: v * self.max_workers for k, v in self.per_worker().items()}


class DeepSpeedSpec(_Model):
    zero_stage: Union[Literal["auto"], Literal[0, 1, 2, 3]] = Field(
        "auto", description="ZeRO stage 0-3, or auto (fastest that fits in worker memory).")
    offload: Literal["none", "cpu"] = Field("none", description="Offload optimizer state (and params in ZeRO-3) to CPU.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, fp32 on CPU.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=65536)
    gradient_clipping: float = Field(0.0, ge=0, le=1e6, description="0 disables clipping.")

    @field_validator("zero_stage", mode="before")
    @classmethod
    def _stage(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit() and value.strip() in "0123":
            raise ValueError(f"must be 0, 1, 2, 3 or 'auto', got {value!r} (a string); "
                             f"write {value.strip()} without quotes")
        if isinstance(value, bool) or value not in ("auto", 0, 1, 2, 3) or isinstance(value, float):
            raise ValueError(f"must be 0, 1, 2, 3 or 'auto', got {value!r}")
        return value


class TrainingSpec(_Model):
    epochs: int = Field(1, ge=1, le=1_000_000, description="Passes over the training set.")
    max_steps: int | None = Field(None, ge=1, le=L.MAX_INT,
                                  description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(32, ge=1, le=1_048_576, description="Micro-batch per worker.")
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=1e6)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    seed: int = Field(0, ge=0, le=L.MAX_SEED)
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="Learning rate after warm-up: constant, or decayed to 0 at the last step "
                                "(cosine or linear).")
    warmup_steps: int = Field(0, ge=0, le=L.MAX_INT,
                              description="Optimizer steps of linear warm-up from lr/warmup_steps to lr.")
    eval_every_steps: int | None = Field(None, ge=1, le=L.MAX_INT,
                                         description="Evaluate every N steps; default: each epoch.")
    log_every_steps: int = Field(10, ge=1, le=L.MAX_INT)
    elastic_batch: Literal["keep", "scale"] = Field(
        "keep", description="An elastic job's global batch when its worker count changes. keep: the batch at "
                            "resources.workers.max is kept by gradient accumulation (gas x max / workers); scale: "
                            "micro-batch and accumulation stay, the global batch follows the worker count, and each "
                            "change is recorded.")

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
    every_steps: int | None = Field(None, ge=1, le=L.MAX_INT,
                                    description="Checkpoint every N steps; default: each epoch.")
    storage: str | None = Field(
        None, max_length=L.MAX_URL,
        description="file:///path or s3://bucket/prefix under one of the server's storage roots; "
                    "default: the server's storage.")
    endpoint_url: str | None = Field(
        None, max_length=L.MAX_URL, pattern=r"^https?://[^\s]+$",
        description="S3 endpoint (for S3-compatible stores); default: the server's.")
    keep: int = Field(2, ge=1, le=1000, description="Checkpoints kept per job.")

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        # Syntax and normalisation here; which roots are allowed is the server's to say
        # (trainyard.specs.storage.confine_storage, at submission).
        if value is None:
            return value
        problem = _storage.syntax_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return _storage.normalise_storage(value)


class FailureSpec(_Model):
    max_failures: int = Field(0, ge=-1, le=10_000,
                              description="Worker-group restarts from the last checkpoint; -1: unlimited.")
    stall_timeout_s: float | None = Field(
        None, ge=30, le=7 * 24 * 3600,
        description="A running job whose workers report no step for this long is STALLED; default: the "
                    "server's stall_timeout_s. Keep it above the time between progress lines "
                    "(training.log_every_steps steps) and the job's start-up.")
    on_stall: Literal["stop", "requeue", "none"] | None = Field(
        None, description="What a STALLED job gets: requeue (stopped, queued again, resumed from its "
                          "checkpoint), stop (stopped, FAILED), none (only marked); default: the server's on_stall.")


class TrackingSpec(_Model):
    experiment: str = Field("default", min_length=1, max_length=L.MAX_TEXT)
    model_name: str | None = Field(None, min_length=1, max_length=L.MAX_TEXT,
                                   description="Registered model name; default: the job name.")
    register_model: bool = Field(True, description="Register the final model in the MLflow Model Registry.")


class JobSpec(_Model):
    name: str = Field(..., pattern=NAME_RE, description="Lower-case letters, digits and '-', at most 63.")
    workload: str = Field(..., min_length=1, max_length=L.MAX_TEXT,
                          description="Family name (cnn, rnn, ...) or module:attribute.")
    project: str = Field("default", pattern=NAME_RE)
    priority: int = Field(0, ge=0, le=1000, description="Higher runs first.")
    max_runtime_s: int | None = Field(
        None, ge=1, le=L.MAX_RUNTIME_S,
        description="Declared longest run, in seconds. A job that declares it may start early on idle capacity "
                    "(backfill) when it surely ends before the job at the head of the queue could start; a job "
                    "still running after it is stopped (CANCELLED, 'ran past its max_runtime_s').")
    description: str = Field("", max_length=L.MAX_DESCRIPTION)
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description=f"The family's hyperparameters (at most {L.MAX_FREEFORM_DEPTH} levels, "
                                          f"{L.MAX_FREEFORM_KEYS} keys, {L.MAX_FREEFORM_BYTES} bytes).")
    data: dict[str, Any] = Field(default_factory=dict, description="The family's data settings (same caps).")
    resources: Resources = Field(default_factory=Resources)
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    failure: FailureSpec = Field(default_factory=FailureSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    working_dir: str | None = Field(
        None, min_length=1, max_length=4096,
        description="Local folder shipped to the cluster with the job (your own workload code).")
    env: dict[str, str] = Field(default_factory=dict, max_length=L.MAX_ENV_VARS,
                                description="Extra environment variables for the workers.")

    @field_validator("workload")
    @classmethod
    def _workload_syntax(cls, value: str) -> str:
        # The one syntax check of the reference; which names resolve is validate_workload_fields'.
        if not WORKLOAD_RE.match(value):
            raise ValueError(f"workload: must be a family name (cnn, rnn, ...) or 'package.module:ATTRIBUTE', "
                             f"got {value[:80]!r}")
        return value

    @field_validator("hyperparameters", "data")
    @classmethod
    def _freeform(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        issues = L.freeform_issues(info.field_name, value)
        if issues:
            raise ValueError(f"{issues[0].field}: {issues[0].message}; {issues[0].fix}")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        # values are secrets: no message here shows one
        for key, item in value.items():
            if len(key) > L.MAX_ENV_KEY or not re.match(ENV_KEY_RE, key):
                raise ValueError(f"env: {key[:L.MAX_ENV_KEY]!r} is not a valid variable name (letters, digits "
                                 f"and '_', not starting with a digit, at most {L.MAX_ENV_KEY} characters)")
            if len(item) > L.MAX_ENV_VALUE:
                raise ValueError(f"env.{key}: the value is {len(item)} characters long, at most {L.MAX_ENV_VALUE}; "
                                 "pass large data through storage")
            if "\x00" in item:
                raise ValueError(f"env.{key}: the value holds a NUL character, which no environment can carry")
        return value

    @model_validator(mode="after")
    def _cross(self) -> "JobSpec":
        problem = elastic_batch_problem(self)
        if problem:
            raise ValueError(problem)
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


def gas_for_world(spec: "JobSpec", world: int) -> int:
    """Gradient accumulation steps at `world` workers. With `training.elastic_batch: keep`, the global
    batch is the one at resources.workers.max (batch_size x max x gas), so fewer workers accumulate
    more; the spec was refused unless that divides evenly. With `scale` (or a fixed job), the spec's."""
    gas = spec.deepspeed.gradient_accumulation_steps
    if spec.training.elastic_batch == "scale" or not spec.resources.elastic:
        return gas
    top = spec.resources.max_workers
    if world < 1 or (gas * top) % world:
        raise ValueError(f"{world} workers cannot keep the global batch of {top} x {gas} accumulation steps")
    return gas * top // world


def elastic_batch_problem(spec: "JobSpec") -> str | None:
    """Why an elastic spec cannot keep its global batch at every worker count it may run at, or None."""
    res, gas = spec.resources, spec.deepspeed.gradient_accumulation_steps
    if not res.elastic or spec.training.elastic_batch != "keep":
        return None
    sizes = range(res.min_workers, res.max_workers + 1)
    bad = [w for w in sizes if (gas * res.max_workers) % w]
    if not bad:
        return None
    lcm = math.lcm(*sizes)
    fit = lcm // math.gcd(lcm, res.max_workers)  # the smallest gas that every size divides into
    return (f"resources.workers: {{min: {res.min_workers}, max: {res.max_workers}}} with training.elastic_batch: "
            f"keep must split the global batch (deepspeed.gradient_accumulation_steps {gas} x {res.max_workers} "
            f"workers) evenly at every size it may run at, and {bad[0]} worker(s) cannot; set "
            f"deepspeed.gradient_accumulation_steps to a multiple of {fit}, pick a range whose sizes divide "
            f"{gas * res.max_workers}, or set training.elastic_batch: scale")


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
        50, ge=1, le=L.MAX_INT, description="Canary requests needed before a verdict; too few by max_wait_s rolls back.")


class PromotionPolicy(_Model):
    """When and how a `candidate` replaces the `champion` (a sweep's `promote:` block)."""

    metric: str | None = Field(None, min_length=1, max_length=L.MAX_TEXT, description="Registry metric to compare; default: the family's primary metric.")
    mode: Literal["max", "min"] | None = Field(None, description="Which way is better; default: the family's.")
    min_improvement: float = Field(
        0.0, ge=0, le=1e12, description="Candidate must beat the champion by at least this much (absolute).")
    canary_weight: float = Field(
        0.1, gt=0, lt=1, description="Traffic share of the canary during observation (0 < x < 1).")
    window_s: float = Field(60.0, gt=0, le=86400, description="Observation window of the canary, seconds.")
    max_wait_s: float | None = Field(
        None, gt=0, le=30 * 86400, description="Longest wait for gates.min_requests; default: 3 x window_s.")
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
    min_replicas: int = Field(1, ge=0, le=1000, description="Replicas kept when idle (0 scales to zero).")
    max_replicas: int = Field(2, ge=1, le=1000)
    target_ongoing_requests: float = Field(2.0, gt=0, le=1e6, description="In-flight requests per replica Serve aims for.")
    upscale_delay_s: float = Field(2.0, ge=0, le=86400)
    downscale_delay_s: float = Field(10.0, ge=0, le=86400)

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
    model: str = Field(..., min_length=1, max_length=L.MAX_TEXT, description="Registered model name in MLflow.")
    version: str | None = Field(None, max_length=20, description="Model version to serve.")
    alias: str | None = Field(None, min_length=1, max_length=L.MAX_TEXT, description="Registry alias to serve (default 'champion', else the latest version).")
    cluster: str | None = Field(None, min_length=1, max_length=L.MAX_TEXT,
                                description="Registered cluster; default: the server's default cluster.")
    project: str = Field("default", pattern=NAME_RE, description="The project the endpoint belongs to.")
    public: bool = Field(False, description="true: anyone may predict on Serve's HTTP port; false (default): a "
                                            "request needs an endpoint key (Authorization: Bearer <key>).")
    split: Literal["replica", "deployments"] = Field(
        "replica", description="replica: each replica holds every live version and picks by weight "
                               "(no extra hop); deployments: each version is its own Serve application "
                               "behind a router that splits by weight (one extra hop; for models too "
                               "large to hold twice). Versions come and go without touching the others.")
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    cpus_per_replica: float = Field(1.0, ge=L.MIN_RESOURCE, le=1024)
    gpus_per_replica: float = Field(0.0, ge=0, le=64)
    max_ongoing_requests: int = Field(16, ge=1, le=100_000)
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
    grace_period: int = Field(1, ge=1, le=L.MAX_INT, description="Evaluations every trial gets before it can be stopped.")
    reduction_factor: float = Field(2.0, gt=1, le=1000, description="Keep 1/reduction_factor of trials at each rung.")
    max_t: int | None = Field(None, ge=1, le=L.MAX_INT, description="Evaluations of the longest trial; default: 100.")
    strategy: Literal["stop", "promote"] = Field(
        "stop", description="stop: Ray's asynchronous ASHA, which decides when a trial reaches a rung, against "
                            "what the rung has seen so far (the first trials always go on). promote: ASHA as "
                            "published: a trial waits (paused, checkpointed) at each rung until it ranks in "
                            "the rung's top 1/reduction_factor; every evaluation then checkpoints.")


class PbtSpec(_Model):
    perturbation_interval: int = Field(2, ge=1, le=L.MAX_INT, description="Evaluations between exploit/explore steps.")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="Bottom fraction copies the top fraction.")
    resample_probability: float = Field(0.25, ge=0, le=1)
    mutate: list[str] | None = Field(
        None, max_length=64, description="search_space keys PBT may change mid-training; default: the training.* keys.")
    synch: bool = Field(False, description="Synchronous PBT: all trials pause at each interval, then exploit. "
                                           "Slower, but exploits even when trials start far apart.")


class SweepConfig(_Model):
    search_space: dict[str, Any] | None = Field(
        None, max_length=64, description="'section.key' -> {choice|grid|uniform|loguniform|randint|quniform: [...]}; "
                          "default: the family's search space.")
    algorithm: str = Field("random", max_length=L.MAX_TEXT, description="random | grid | bayesian (Optuna TPE).")
    scheduler: str = Field("fifo", max_length=L.MAX_TEXT, description="fifo | asha | pbt.")
    metric: str | None = Field(None, min_length=1, max_length=L.MAX_TEXT, description="Metric to optimise; default: the family's.")
    mode: Literal["max", "min"] | None = Field(
        None, description="Default: the family's mode, only when metric is the family's metric.")
    num_trials: int | None = Field(None, ge=1, le=100_000, description="Trials in all; default: the grid size, or 8.")
    max_concurrent_trials: int = Field(2, ge=1, le=10_000)
    time_budget_s: float | None = Field(None, gt=0, le=365 * 86400,
                                        description="Stop starting/continuing trials after this.")
    seed: int | None = Field(0, ge=0, le=L.MAX_SEED, description="Seed of the search algorithm.")
    asha: AshaSpec = Field(default_factory=AshaSpec)
    pbt: PbtSpec = Field(default_factory=PbtSpec)
    max_failures: int = Field(1, ge=0, le=10_000, description="Retries of a failed trial (from its last checkpoint).")
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
        if self.resources.elastic:
            raise ValueError(
                f"resources.workers: sweep trials run a fixed number of workers, got "
                f"{{min: {self.resources.min_workers}, max: {self.resources.max_workers}}}; write one number "
                f"(e.g. workers: {self.resources.max_workers})")
        if self.sweep.trial_executor == "inline" and self.resources.max_workers != 1:
            raise ValueError(
                f"sweep.trial_executor: 'inline' runs a trial in one process, so resources.workers must be 1, "
                f"got {self.resources.workers}; use trial_executor: train (or auto) for gangs of workers")
        return self

    def trial_executor(self) -> str:
        """The executor trials use: 'train' (TorchTrainer gang) or 'inline' (in the Tune actor)."""
        chosen = self.sweep.trial_executor
        if chosen == "auto":
            return "inline" if self.resources.max_workers == 1 else "train"
        return chosen

    def job_spec(self) -> JobSpec:
        """The base job, without the sweep's own blocks."""
        data = self.model_dump(exclude={"sweep", "promote"})
        return JobSpec.model_validate(data)


def json_schemas() -> dict[str, dict]:
    """The JSON Schemas of the user-facing specs, by name."""
    return {"job": JobSpec.model_json_schema(), "endpoint": EndpointSpec.model_json_schema(),
            "sweep": SweepSpec.model_json_schema()}
