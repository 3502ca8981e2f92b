"""The checks of a spec that need its workload's metadata (still torch-free)."""
from __future__ import annotations

from typing import Any

from trainyard.errors import FieldIssue, SpecError

__all__ = ["validate_workload_fields", "hyperparameter_issues"]


def validate_workload_fields(spec, workload_meta: Any = None) -> list[FieldIssue]:
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


def hyperparameter_issues(spec, workload_meta: Any = None) -> list[FieldIssue]:
    """`hyperparameters` against the family's static `hparams_schema`, from its metadata (a
    registered family's meta.json, or what the client sent): no family code runs here."""
    from trainyard.families import meta_for

    try:
        meta = meta_for(spec.workload, supplied=workload_meta)
    except SpecError:
        return []  # validate_workload_fields reports it
    schema = dict(meta.hparams_schema or {}) if meta is not None else {}
    if not schema:
        return []
    import jsonschema

    issues = []
    for err in sorted(jsonschema.Draft202012Validator(schema).iter_errors(spec.hyperparameters),
                      key=lambda e: list(e.path)):
        path = ".".join(str(p) for p in err.path)
        rule = err.schema if isinstance(err.schema, dict) else {}
        issues.append(FieldIssue(f"hyperparameters.{path}" if path else "hyperparameters",
                                 f"{err.message} for workload {spec.workload!r}",
                                 err.instance if isinstance(err.instance, (str, int, float, bool)) else None,
                                 rule.get("description")))
    return issues
