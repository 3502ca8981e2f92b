"""The checks of a spec that need its workload's metadata (still torch-free)."""
from __future__ import annotations

from trainyard.errors import FieldIssue, SpecError

__all__ = ["validate_workload_fields"]


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
