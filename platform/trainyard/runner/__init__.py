"""What runs inside a Ray job: `python -m trainyard.runner job --job-id ID`.

Modules:
    strategy  DeepSpeed planner (ZeRO stage / precision) and config builder (pure)
    train     the Ray Train worker loop, `build_trainer` and `run_job`
    protocol  the TRAINYARD_PROGRESS / TRAINYARD_RESULT stdout lines (torch-free)
    storage   file:// and s3:// checkpoint storage for Ray Train (torch-free)

Importing this package imports no torch; `train` does, when imported.
"""


def checked_spec(parse, spec, *, source: str | None = None):
    """Parse a spec and import its workload at once, here in the driver: the server imports
    no user code, so this is where `workload: pkg.mod:ATTR` is first checked. Raises
    SpecError naming `workload` before anything starts."""
    from trainyard.workload import resolve_workload

    parsed = parse(spec, source=source, check_workload=False)
    workload = resolve_workload(parsed.workload)
    return parse(spec, source=source, workload_meta=workload.meta())
