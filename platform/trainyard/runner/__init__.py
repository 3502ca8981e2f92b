"""What runs inside a Ray job: `python -m trainyard.runner job --job-id ID`.

Modules:
    strategy  DeepSpeed planner (ZeRO stage / precision) and config builder (pure)
    train     the Ray Train worker loop, `build_trainer` and `run_job`
    protocol  the TRAINYARD_PROGRESS / TRAINYARD_RESULT stdout lines (torch-free)
    storage   file:// and s3:// checkpoint storage for Ray Train (torch-free)

Importing this package imports no torch; `train` does, when imported.
"""
