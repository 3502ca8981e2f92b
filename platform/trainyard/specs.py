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
import re
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    eval_every_steps: int | None = Field(None, ge=1, description="Evaluate every N steps; default: each epoch.")
    log_every_steps: int = Field(10, ge=1)


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


def validate_workload_fields(spec: JobSpec) -> list[FieldIssue]:
    """Checks that need the workload definition (still torch-free)."""
    from trainyard.workload import resolve_workload

    if spec.working_dir is not None and ":" in spec.workload:
        # user code that only exists inside the working_dir: the runner checks it
        return []
    try:
        resolve_workload(spec.workload)
    except SpecError as exc:
        return exc.issues
    return []


def parse_job_spec(spec: str | Path | Mapping[str, Any], *, source: str | None = None,
                   check_workload: bool = True) -> JobSpec:
    """Validate a job spec given as YAML text, a path, or a mapping."""
    data, source = _as_mapping(spec, source)
    try:
        job = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(spec_issues_from_validation(exc, JobSpec), source=source) from None
    if check_workload:
        issues = validate_workload_fields(job)
        if issues:
            raise SpecError(issues, source=source)
    return job


def json_schemas() -> dict[str, dict]:
    """The JSON Schemas of the user-facing specs, by name."""
    return {"job": JobSpec.model_json_schema()}


if __name__ == "__main__":  # python -m trainyard.specs  -> prints the schemas
    print(json.dumps(json_schemas(), indent=2, sort_keys=True))
