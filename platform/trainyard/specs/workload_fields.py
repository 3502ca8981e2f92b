"""The checks of a spec that need its workload's metadata (still torch-free)."""
from __future__ import annotations

from trainyard.errors import FieldIssue, SpecError

__all__ = ["validate_workload_fields", "hyperparameter_issues"]


def validate_workload_fields(spec) -> list[FieldIssue]:
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


def hyperparameter_issues(spec) -> list[FieldIssue]:
    """`hyperparameters` against the family's static `hparams_schema` (built-in families: their
    metadata is part of the installed Trainyard; a user's family is checked by the runner)."""
    from trainyard.workload import known_workloads, resolve_workload

    if spec.workload not in known_workloads():
        return []
    try:
        schema = dict(resolve_workload(spec.workload).hparams_schema or {})
    except SpecError:
        return []  # validate_workload_fields reports it
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
