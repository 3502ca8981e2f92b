"""From what a user sends to a validated spec: text or mapping -> caps -> model -> checks.

Every parse_* function goes through `_parse_model`, so all specs are read, bounded and
reported the same way:
  1. text is decoded and read by the closed YAML loader (trainyard.specs.safe_yaml);
  2. the document is walked once for size, depth, NaN/inf, integer range and key types
     (trainyard.specs.limits) -- a mapping sent as JSON gets the same walk;
  3. the strict pydantic model validates it (trainyard.specs.models);
  4. checks that need the workload run last (its metadata; a sweep's search space).

Layers: parsing -> sweeps.validate -> (nothing of specs); parsing -> models -> issues, limits.
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from trainyard.errors import FieldIssue, SpecError
from trainyard.specs import limits
from trainyard.specs.issues import spec_issues_from_validation
from trainyard.specs.models import EndpointSpec, JobSpec, PromotionPolicy, SweepSpec
from trainyard.specs.safe_yaml import decode_spec_bytes, load_document
from trainyard.specs.workload_fields import hyperparameter_issues, validate_workload_fields
from trainyard.sweeps.validate import sweep_issues

__all__ = ["load_yaml", "read_spec_file", "load_spec_file", "parse_job_spec", "parse_sweep_spec",
           "parse_endpoint_spec", "parse_promotion_policy", "validate_workload_fields"]


def load_yaml(text: str, *, source: str = "spec") -> dict[str, Any]:
    """Parse YAML text into a mapping, with a located error when it is malformed, refused
    (aliases, duplicate keys) or too large or deep (SpecTooLargeError)."""
    data = load_document(text, source=source)
    if data is None:
        raise SpecError("the spec is empty", source=source, field="spec", fix="see examples/cnn.yaml")
    if not isinstance(data, dict):
        raise SpecError(f"the spec must be a mapping of keys, got {limits.kind_of(data)}",
                        source=source, field="spec", fix="see examples/cnn.yaml")
    return data


def read_spec_file(path: str | Path) -> str:
    """The text of a spec file: size-capped before it is read, and UTF-8 or a clear error."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(limits.MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read {str(path)!r}: {exc.strerror}", source=str(path), field="spec",
                        value=str(path), fix="check the path") from None
    return decode_spec_bytes(data, source=str(path))


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """read_spec_file + load_yaml: the mapping a spec file holds."""
    return load_yaml(read_spec_file(path), source=str(path))


def _as_mapping(spec: Any, source: str | None) -> tuple[dict, str]:
    if isinstance(spec, Path):
        return load_spec_file(spec), str(spec)
    if isinstance(spec, str):
        return load_yaml(spec, source=source or "spec"), source or "spec"
    if not isinstance(spec, Mapping):
        raise SpecError(f"the spec must be a mapping, got {limits.kind_of(spec)}", source=source, field="spec")
    return dict(spec), source or "spec"


def _parse_model(model: type[BaseModel], spec: Any, source: str | None,
                 *checks: Callable[[Any], list[FieldIssue]]) -> Any:
    """Validate `spec` against `model`, then run each check (parsed -> issues) in order."""
    data, source = _as_mapping(spec, source)
    issues = limits.check_document(data, source=source)
    if issues:
        raise SpecError(issues, source=source)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(spec_issues_from_validation(exc, model), source=source) from None
    for check in checks:
        issues = check(parsed)
        if issues:
            raise SpecError(issues, source=source)
    return parsed


def _workload_checks(workload_meta: Any) -> list:
    """The checks that need what is known of the workload (`workload_meta`: what the client
    read of a user's own family, see trainyard.families)."""
    return [lambda spec: validate_workload_fields(spec, workload_meta),
            lambda spec: hyperparameter_issues(spec, workload_meta)]


def parse_job_spec(spec: str | Path | Mapping[str, Any], *, source: str | None = None,
                   check_workload: bool = True, workload_meta: Any = None) -> JobSpec:
    """Validate a job spec given as YAML text, a path, or a mapping."""
    checks = _workload_checks(workload_meta) if check_workload else []
    return _parse_model(JobSpec, spec, source, *checks)


def parse_sweep_spec(spec: str | Path | Mapping[str, Any], *, source: str | None = None,
                     check_workload: bool = True, workload_meta: Any = None) -> SweepSpec:
    """Validate a sweep spec (YAML text, path or mapping), search space included."""
    def search_space_issues(sweep: SweepSpec) -> list[FieldIssue]:
        from trainyard.families import meta_for

        try:
            meta = meta_for(sweep.workload, supplied=workload_meta)
        except SpecError:
            return []  # validate_workload_fields reports it
        return sweep_issues(sweep, meta)

    checks = [*_workload_checks(workload_meta), search_space_issues] if check_workload else []
    return _parse_model(SweepSpec, spec, source, *checks)


def parse_endpoint_spec(spec: str | Path | Mapping[str, Any], *, source: str | None = None) -> EndpointSpec:
    """Validate an endpoint spec given as YAML text, a path, or a mapping."""
    return _parse_model(EndpointSpec, spec, source)


def parse_promotion_policy(spec: str | Path | Mapping[str, Any] | None, *,
                           source: str | None = None) -> PromotionPolicy:
    """Validate a promotion policy (a sweep's `promote:` block); None gives the defaults."""
    if spec is None:
        return PromotionPolicy()
    return _parse_model(PromotionPolicy, spec, source)
