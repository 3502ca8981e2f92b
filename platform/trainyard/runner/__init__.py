"""What runs inside a Ray job: `python -m trainyard.runner job|sweep` (see __main__).

Modules (each imports torch, deepspeed or ray.train only inside the functions that need them):
    trainer         the Trainer: one job or sweep trial on one rank; train_loop_per_worker
    session         the Session protocol and its two kinds: Ray Train worker, inline trial
    batches         a rank's batches per epoch, resumable mid-epoch; the run's step plan
    engines         one DeepSpeed engine per module, its device, dtype and lr schedule
    checkpoint      the Checkpointer: engines, generators and position, saved and restored
    evaluator       the workload's evaluation, logged
    meters          loss means and step timing
    tracker         rank 0's outlets: the MLflow run and the driver's progress queue
    launch          make_trainer: the one TorchTrainer assembly for jobs and sweep trials
    job             the job driver: run_job
    sweep_driver    the sweep driver: run_sweep (a Tune Tuner over trials)
    trial           the Tune trainable of one trial
    executor_gang   a trial as its own TorchTrainer (any number of workers)
    executor_inline a 1-worker trial inside its Tune actor
    reports         how reports travel between queues, Train and Tune
    asha            promotion-based ASHA and its gated searchers
    strategy        DeepSpeed planner (ZeRO stage / precision) and config builder (pure)
    storage         file:// and s3:// checkpoint storage for Ray Train (torch-free)
    train, sweep    the names callers used before the split
The wire protocol with the server is trainyard.protocol.
"""


def checked_spec(parse, spec, *, source: str | None = None):
    """Parse a spec and import its workload at once, here in the driver: the server imports
    no user code, so this is where `workload: pkg.mod:ATTR` is first checked. Raises
    SpecError naming `workload` before anything starts."""
    from trainyard.workload import resolve_workload

    parsed = parse(spec, source=source, check_workload=False)
    workload = resolve_workload(parsed.workload)
    return parse(spec, source=source, workload_meta=workload.meta())
