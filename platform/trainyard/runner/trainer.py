"""The worker loop: a Trainer made of parts (batches, engines, checkpointer, evaluator, meters, session)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from trainyard.runner.batches import Batches, StepPlan
from trainyard.runner.checkpoint import Checkpointer
from trainyard.runner.engines import Engines
from trainyard.runner.evaluator import Evaluator
from trainyard.runner.meters import Meters
from trainyard.runner.preempt import NODE_NOTICE, NodeNotice
from trainyard.runner.segments import segment_figures
from trainyard.runner.session import Session
from trainyard.runner.tracker import Tracker
from trainyard.runner.usage import count_flops_enabled, device_info, mlflow_figures, usage_record

__all__ = ["Trainer", "train_loop_per_worker", "CRASH_ENV", "NOTICE_ENV", "STEP_DELAY_ENV", "STEP_DELAY_UNTIL_ENV",
           "step_delay_for_test"]

CRASH_ENV = "TRAINYARD_TEST_CRASH"  # tests only: "rank:step:marker_path"
# tests only, "rank:step:marker_path": that rank's process gets SIGTERM once, as a node's stop notice
NOTICE_ENV = "TRAINYARD_TEST_NOTICE"
# tests only: seconds to sleep after each optimizer step, so a test can stop a short job mid-run
STEP_DELAY_ENV = "TRAINYARD_TEST_STEP_DELAY_S"
# tests only: a file path; once that file exists the step delay above ends, so a test that
# needs slow steps only until something happened (a node lost and replaced) runs the rest of
# the job at full speed
STEP_DELAY_UNTIL_ENV = "TRAINYARD_TEST_STEP_DELAY_UNTIL"


@dataclass
class Trainer:
    """One job (or one sweep trial) on one rank. `Trainer.from_config` builds the parts;
    `train` runs the loop: step, evaluate and checkpoint when due, finish."""

    spec: Any  # JobSpec
    config: dict
    workload: Any
    ctx: Any  # StepContext, shared by train_step and evaluate
    plan: Any  # DeepSpeedPlan
    steps: StepPlan
    batches: Batches
    engines: Engines
    checkpointer: Checkpointer
    evaluator: Evaluator
    meters: Meters
    tracker: Tracker
    session: Session
    micro: int = 0  # train_step calls done, all epochs
    resumed_from: str | None = None
    flops_per_micro: int | None = None  # rank 0: model FLOPs of its first micro-batch (cost record)
    _busy: float = 0.0  # seconds inside the current optimizer step's train_step calls
    stop: Any = None  # runner.preempt.StopWatch: "checkpoint now and stop" (preemption); None: never asked
    preempted_at: int | None = None  # the step it stopped after, when it was asked to
    resize: dict | None = None  # resumed at another world size: what changed (runner.elastic.resume_micro)

    def train(self) -> None:
        spec, steps = self.spec, self.steps
        every_ckpt, every_eval = spec.checkpoint.every_steps, spec.training.eval_every_steps
        try:
            self.tracker.start(spec=spec, hparams=self.ctx.hparams, plan=self.plan, world=self.session.world_size,
                               resumed_from=self.resumed_from, resumed_step=self.micro // steps.gas,
                               resize=self.resize)
            self._announce()
            self.engines.train()
            while self.micro < steps.total_micro:
                epoch = self.micro // steps.per_epoch
                for batch in self.batches.epoch(epoch, start=self.micro % steps.per_epoch):
                    if not self._micro_step(batch, epoch):
                        continue  # accumulating gradients
                    if self.micro >= steps.total_micro:
                        break
                    step, end_of_epoch = self.micro // steps.gas, self.micro % steps.per_epoch == 0
                    ckpt_due = (step % every_ckpt == 0) if every_ckpt else end_of_epoch
                    eval_due = (step % every_eval == 0) if every_eval else end_of_epoch
                    # a collective at the steps the ranks agreed on (runner.preempt): all stop together
                    due = self.stop is not None and self.stop.due(step)
                    reason = self.stop.agreed_reason(step=step) if due else 0
                    if reason:
                        self._checkpoint_and_stop(step, epoch, end_of_epoch=end_of_epoch, evaluate=eval_due,
                                                  node_notice=reason == NODE_NOTICE)
                        if reason == NODE_NOTICE:
                            self.stop.leave_if_noticed()
                            raise NodeNotice(f"a worker was told to leave (SIGTERM); checkpointed after step {step}, "
                                             "the group restarts from there without it")
                        return
                    if ckpt_due or eval_due:
                        self._evaluate_and_report(step, epoch, end_of_epoch=end_of_epoch, checkpoint=ckpt_due)
                if self.micro % steps.per_epoch != 0 and self.micro < steps.total_micro:
                    break  # cannot happen: an epoch always ends on its last batch
            self._finish()
        finally:
            if self.stop is not None:
                self.stop.close()
            # a trial that Tune stops (ASHA, PBT) leaves through session.report with SystemExit,
            # a failed step with its exception: either way what rank 0 queued for MLflow is sent
            # (an inline trial's actor runs the next trial)
            self.tracker.close()

    def _micro_step(self, batch, epoch: int) -> bool:
        """Train on one micro-batch; True when that completed an optimizer step."""
        gas = self.steps.gas
        step = self.micro // gas
        self.ctx.step, self.ctx.epoch = step, epoch
        if self.micro % gas == 0:
            lr = self.engines.schedule_lr(step, self.steps.total_steps)
            if lr is not None:  # what the optimizer steps with, logged with that step's loss
                self.tracker.log_metrics({"lr": lr}, step=step + 1)
        started = time.perf_counter()
        run = lambda: self.workload.train_step(self.engines.by_name, self.engines.to_device(batch), self.ctx)  # noqa: E731
        if self.session.rank == 0 and self.flops_per_micro is None and count_flops_enabled():
            from trainyard.costs.flops import counted

            # the first step itself is counted (no extra step): the MFU numerator
            out, self.flops_per_micro = counted(run)
        else:
            out = run()
        self._busy += time.perf_counter() - started
        self.micro += 1
        _maybe_crash_for_test(os.environ.get(CRASH_ENV), rank=self.session.rank, step=self.micro // gas)
        _maybe_crash_for_test(os.environ.get(NOTICE_ENV), rank=self.session.rank, step=self.micro // gas,
                              notice=True)
        if self.micro % gas:
            return False
        delay = step_delay_for_test(os.environ.get(STEP_DELAY_ENV), os.environ.get(STEP_DELAY_UNTIL_ENV))
        if delay:
            time.sleep(delay)
        step = self.micro // gas
        values = {k: float(v) for k, v in out.items()}
        self.meters.busy(self._busy)
        self._busy = 0.0
        self.meters.step_done(step, values)
        self.tracker.log_metrics(values, step=step)
        if self.session.rank == 0 and step % self.spec.training.log_every_steps == 0:
            self.tracker.progress("progress", step, epoch, self.meters.take_window(), segment=self._segment())
        return True

    def _evaluate_and_report(self, step: int, epoch: int, *, end_of_epoch: bool, checkpoint: bool) -> None:
        metrics = self.evaluator(step, self.micro // self.steps.per_epoch if end_of_epoch else epoch)
        report = {**self.meters.take_means(), **metrics, "step": step, "epoch": epoch,
                  "total_steps": self.steps.total_steps}
        self.tracker.progress("progress", step, epoch, report, segment=self._segment(checkpoint=checkpoint))
        if checkpoint:
            self.tracker.flush()  # what a checkpoint covers is on record before a crash can lose it
            self.checkpointer.save_and_report(self.session, report, micro_step=self.micro, step=step, epoch=epoch)
        else:
            self.session.report(report)

    def _checkpoint_and_stop(self, step: int, epoch: int, *, end_of_epoch: bool, evaluate: bool,
                             node_notice: bool = False) -> None:
        """Asked to stop (preemption; or, `node_notice`, a worker's SIGTERM: the group restarts
        without it): save this step's state and leave. Only what the uninterrupted run would do
        at this step is done (its evaluation, when one is due), so a run resumed from here draws
        the same numbers as one that never stopped."""
        if evaluate:
            self._evaluate_and_report(step, epoch, end_of_epoch=end_of_epoch, checkpoint=True)
        else:
            report = {**self.meters.take_means(), "step": step, "epoch": epoch, "total_steps": self.steps.total_steps}
            self.tracker.progress("progress", step, epoch, report, segment=self._segment(checkpoint=True))
            self.tracker.flush()
            self.checkpointer.save_and_report(self.session, report, micro_step=self.micro, step=step, epoch=epoch)
        if node_notice:
            self.tracker.flush()
            return
        self.preempted_at = step
        if self.session.rank == 0:
            print(f"[trainyard] job {self.config['job_id']}: stopped after step {step} as asked "
                  f"(checkpoint saved)", flush=True)
        self.tracker.close()
        self.tracker.progress("preempted", step, epoch, {})

    def _finish(self) -> None:
        """Final evaluation, the model into the run, the last checkpoint with the final report."""
        micro, steps = self.micro, self.steps
        step = micro // steps.gas
        timing = self.meters.timing()
        if "train_steps_per_s" in timing:
            self.tracker.log_metrics({"train_steps_per_s": timing["train_steps_per_s"]}, step=step)
        epoch = max(0, (micro - 1) // steps.per_epoch) if micro else 0
        final_eval = self.evaluator(step, epoch)
        final = {**self.meters.take_means(), **final_eval, "step": step, "epoch": epoch,
                 "total_steps": steps.total_steps, "trainyard_done": 1, **timing}
        model_info = self._log_model(final_eval)
        usage = self._usage() if self.session.rank == 0 else None
        if usage is not None:
            # numbers only, so that Tune keeps them: a sweep's cost sums its trials' (sweep_driver)
            final.update({f"trainyard_cost_{k}": float(usage[k]) for k in ("steps", "step_seconds", "flops_per_step")
                          if usage.get(k) is not None})
        if self.session.rank == 0:
            final.update({f"trainyard_{k}": v for k, v in model_info.items() if v is not None})
            elapsed = time.monotonic() - self.meters.started
            print(f"[trainyard] job {self.config['job_id']}: {step} steps done in {elapsed:.1f}s; "
                  f"{json.dumps(final_eval)}", flush=True)
        if usage is not None:
            params, metrics = mlflow_figures(usage)
            self.tracker.log_params(params)
            self.tracker.log_metrics(metrics, step=step)
        self.tracker.close()
        self.tracker.progress("final", step, epoch, {**final_eval, **{k: v for k, v in final.items()
                                                                     if k.startswith("trainyard_")}},
                              usage=usage)
        self.checkpointer.save_and_report(self.session, final, micro_step=micro, step=step, epoch=epoch,
                                          done=True)

    def _usage(self) -> dict[str, Any]:
        """Rank 0's figures for the cost record (trainyard.runner.usage)."""
        res = self.spec.resources
        on_gpu = bool(res.gpus_per_worker)
        return usage_record(steps=self.meters.steps_run, step_seconds=self.meters.step_seconds,
                            started_unix=self.meters.started_unix, flops_per_micro_batch=self.flops_per_micro,
                            gradient_accumulation=self.steps.gas, world_size=self.session.world_size,
                            devices_per_worker=float(res.gpus_per_worker if on_gpu else res.cpus_per_worker),
                            device=device_info(on_gpu=on_gpu, dtype=self.plan.precision))

    def _log_model(self, final_eval: dict) -> dict[str, Any]:
        """Every rank takes part in gathering the weights; rank 0 logs them with the run's
        artifacts (spec, loss curve, the workload's samples) and registers the model."""
        if not (bool(self.config.get("log_model", True)) and self.tracker.has_run):
            return {}
        state_dicts = self.checkpointer.gather_state_dicts()
        if self.session.rank != 0:
            return {}
        from trainyard.tracking.finish import finish_tracking

        return finish_tracking(self.tracker.logger, spec=self.spec, config=self.config, hparams=self.ctx.hparams,
                               workload=self.workload, eval_ds=self.evaluator.dataset,
                               state_dicts=state_dicts, tracking=self.tracker.tracking)

    def _segment(self, *, checkpoint: bool = False, start: bool = False) -> dict[str, Any] | None:
        """This worker group's figures for the driver (runner.segments); rank 0 only."""
        if self.session.rank != 0:
            return None
        return segment_figures(world=self.session.world_size, started_unix=self.meters.started_unix,
                               steps=self.meters.steps_run, step_seconds=self.meters.step_seconds,
                               checkpoint=checkpoint, start=start, resumed_step=self.micro // self.steps.gas)

    def _announce(self) -> None:
        if self.session.rank == 0:
            steps, micro = self.steps, self.micro
            # a (re)started group says so first: the driver counts world sizes from these
            self.tracker.progress("world", micro // steps.gas, micro // steps.per_epoch, {},
                                  segment=self._segment(start=True))
            print(f"[trainyard] job {self.config['job_id']}: {self.plan.reason}; {self.session.world_size} "
                  f"workers, {steps.per_epoch} steps/epoch, {steps.total_steps} steps"
                  + (f", resumed at step {micro // steps.gas}" if micro else ""), flush=True)
            if self.resize:
                print(f"[trainyard] job {self.config['job_id']}: {_resize_line(self.resize)}", flush=True)

    @classmethod
    def from_config(cls, config: dict) -> "Trainer":
        """Build every part for this rank. The order of what draws from the seeded generators
        (models, engines, datasets, then a checkpoint's saved generators) is part of exact
        resume: change it and a resumed run no longer matches an uninterrupted one."""
        from trainyard.runner.engines import worker_env
        from trainyard.runner.session import loop_session
        from trainyard.specs import JobSpec

        spec = JobSpec.model_validate(config["spec"])
        for key, value in worker_env(spec).items():
            os.environ.setdefault(key, value)  # the runtime_env set these already on a real cluster

        import torch

        from trainyard.runner.batches import plan_steps
        from trainyard.runner.checkpoint import read_state
        from trainyard.runner.elastic import Layout, elastic_batch, gas_at_world, resume_micro, saved_layout
        from trainyard.runner.strategy import build_deepspeed_config
        from trainyard.runner.tracker import open_logger
        from trainyard.runner.universal import needs_universal
        from trainyard.workload import StepContext, resolve_workload

        session = loop_session(config)
        rank, world = session.rank, session.world_size
        # rank 0's MLflow client opens in the background while the engines are built (runner.tracker)
        opening = open_logger(rank=rank, tracking=config.get("mlflow"))
        on_gpu = bool(spec.resources.gpus_per_worker)
        if not on_gpu:
            # 2 workers on 2 cores with torch's default threads oversubscribe the cores
            torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))
        workload = resolve_workload(spec.workload)
        hparams = {**dict(workload.default_hparams), **spec.hyperparameters}
        checkpoint = session.get_checkpoint()
        if checkpoint is None and config.get("resume_from") is not None:
            # Train v2 refuses TorchTrainer(resume_from_checkpoint=...); a sweep trial that Tune
            # restores (PBT exploit, retry, resumed sweep) hands its ray.train.Checkpoint here
            checkpoint = config["resume_from"]
        # the checkpoint's world size is read before the engines exist: DeepSpeed reads
        # checkpoint.load_universal from the config once, at engine creation, and an engine
        # built without it refuses ZeRO shards of another world size (reading the state draws
        # nothing from the seeded generators)
        saved = read_state(checkpoint) if checkpoint is not None else None
        saved_world = int(saved.get("world_size", world)) if saved else world
        torch.manual_seed(spec.training.seed)
        models = workload.build_models(hparams)
        plan = _plan(spec, models=models, world=world, session=session, on_gpu=on_gpu,
                     saved_stage=saved.get("zero_stage") if saved and saved_world != world else None)
        gas = gas_at_world(spec, world)
        ds_config = build_deepspeed_config(plan, micro_batch_size=spec.training.batch_size,
                                           gradient_accumulation_steps=gas,
                                           gradient_clipping=spec.deepspeed.gradient_clipping)
        if needs_universal(saved_world=saved_world, world=world, zero_stage=plan.zero_stage):
            ds_config["checkpoint"] = {"load_universal": True}
        engines = Engines.build(models, training=spec.training, ds_config=ds_config, precision=plan.precision,
                                on_gpu=on_gpu, session=session)

        train_ds, eval_ds = workload.build_datasets(hparams, spec.data)
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=spec.training.seed)
        batches = Batches(train_ds, sampler, spec.training.batch_size)
        # refuses a warm-up longer than the run before any step (or MLflow logging) is done
        total_micro, total_steps = plan_steps(spec.training, steps_per_epoch=batches.steps_per_epoch, gas=gas,
                                              examples=len(train_ds), workers=world)
        steps = StepPlan(total_micro=total_micro, total_steps=total_steps, per_epoch=batches.steps_per_epoch, gas=gas)
        layout = Layout(world=world, gas=gas, per_epoch=steps.per_epoch, batch_size=spec.training.batch_size)

        checkpointer = Checkpointer(engines.by_name, rank=rank, world_size=world, zero_stage=plan.zero_stage)
        micro, resumed_from, resume = 0, None, None
        if checkpoint is not None:
            state = checkpointer.restore(checkpoint, seed=spec.training.seed)
            micro, change = resume_micro(micro=int(state["micro_step"]), step=int(state.get("step", 0)),
                                         saved=saved_layout(state), now=layout,
                                         saved_world=int(state.get("world_size", world)))
            resume = {**state["resume"], **change, "elastic_batch": elastic_batch(spec)} if change else None
            resumed_from = getattr(checkpoint, "path", None)
            engines.set_optimizer_values()
        checkpointer.meta = {"zero_stage": plan.zero_stage, "world_size": world, "modules": sorted(engines.by_name),
                             "total_micro_steps": total_micro, **layout.as_dict()}

        ctx = StepContext(hparams=hparams, device=engines.device, dtype=engines.dtype, rank=rank, world_size=world,
                          loss_fn=workload.loss_fn, extra={"plan": plan, "engines": engines.by_name})
        tracker = Tracker(rank=rank, tracking=config.get("mlflow"), queue=config.get("progress_queue"),
                          total_steps=total_steps, opening=opening)
        start_step = micro // gas
        stop = None
        if config.get("preempt_token"):
            from trainyard.runner.preempt import StopWatch, worker_notice

            # the driver's stop (preemption) and this worker's own SIGTERM (its node is leaving)
            stop = StopWatch(config["preempt_token"], device=engines.device, notice=worker_notice())
        warmup = int(config.get("timing_warmup_steps", max(1, min(10, (total_steps - start_step) // 5))))
        return cls(spec=spec, config=config, workload=workload, ctx=ctx, plan=plan, steps=steps, batches=batches,
                   engines=engines, checkpointer=checkpointer,
                   evaluator=Evaluator(workload, engines, eval_ds, ctx, tracker),
                   meters=Meters(start_step=start_step, warmup=warmup), tracker=tracker, session=session,
                   micro=micro, resumed_from=resumed_from, stop=stop, resize=resume)


def _resize_line(resize: dict) -> str:
    """The announce line of a resume at another world size: what changed, never silently."""
    rng = resize.get("rng") or {}
    exact, skipped = resize.get("data_exact"), resize.get("skipped_samples")
    if exact:
        data = "the next unseen sample"
    elif exact is None:
        data = "a data position the checkpoint does not record (saved before layouts were)"
    else:
        data = "an approximate data position" + (f" ({skipped:+d} samples)" if skipped is not None else
                                                 " (another epoch length at this world size)")
    return (f"resumed on {resize['world_size']} workers from a checkpoint of {resize.get('resized_from_world')} "
            f"(elastic_batch {resize.get('elastic_batch')}: global batch {resize.get('global_batch_from')} -> "
            f"{resize['global_batch']}, gradient accumulation {resize.get('gas_from')} -> {resize['gas']}); "
            f"ZeRO states through the universal form for {resize.get('universal') or 'no module'}; "
            f"generators restored on ranks {rng.get('restored') or 'none'}, seeded from (seed, step, rank) "
            f"on ranks {rng.get('seeded') or 'none'}; data goes on at {data}")


def _plan(spec, *, models, world: int, session, on_gpu: bool, saved_stage):
    """The DeepSpeed plan on this world. Resumed at another world size (saved_stage set), an
    `auto` stage keeps the checkpoint's: auto may pick another one at the new size, and only
    ZeRO 1-3 checkpoints go through the universal form (a stage-0 one loads as is, into stage 0)."""
    from trainyard.errors import CapacityError
    from trainyard.runner.strategy import count_parameters, detect_hardware, plan_deepspeed

    hardware = detect_hardware(local_world_size=session.local_world_size, use_gpu=on_gpu)
    requested = spec.deepspeed
    if saved_stage is not None and str(spec.deepspeed.zero_stage) == "auto":
        requested = {**spec.deepspeed.model_dump(), "zero_stage": int(saved_stage)}
    try:
        plan = plan_deepspeed(requested, num_params=count_parameters(models), world_size=world, hardware=hardware)
    except CapacityError as exc:
        if requested is spec.deepspeed:
            raise
        raise CapacityError(f"the checkpoint was saved under ZeRO-{saved_stage}, which does not fit on "
                            f"{world} workers: {exc.message}", field="deepspeed.zero_stage", value="auto",
                            fix=exc.fix) from exc
    if saved_stage is not None and (int(saved_stage) == 0) != (plan.zero_stage == 0):
        raise CapacityError(f"a checkpoint saved under ZeRO-{saved_stage} cannot be loaded under "
                            f"ZeRO-{plan.zero_stage} at another world size", field="deepspeed.zero_stage",
                            value=spec.deepspeed.zero_stage,
                            fix=f"resume with deepspeed.zero_stage: {saved_stage} (or auto)")
    return plan


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker function: train one job (or one sweep trial) on this rank.

    config keys (a plain dict, so sweeps can build it):
        spec        dict, required: JobSpec.model_dump(). Sweeps override hyperparameters /
                    training / deepspeed values in it before calling.
        job_id      str, required: names the job in logs and MLflow tags.
        mlflow      {"tracking_uri": str|None, "run_id": str, "experiment_id": str,
                    "project": str} or None. Rank 0 logs into run_id (created by the driver,
                    so a restarted worker group reuses it) and registers the model as one of
                    `project`'s (default: the spec's). None: no MLflow logging at all.
        log_model   bool, default True: log the consolidated final model into the run.
        register_model  bool|None, default spec.tracking.register_model: also register it
                    under spec.model_name() (sweeps pass False for trials).
        session     a Session (trainyard.runner.session), or None (Ray Train's worker
                    context): sweeps running a 1-worker trial inline pass an InlineSession.
        progress_queue  ray.util.queue.Queue|None: rank 0 puts progress dicts
                    {"kind": "progress"|"final", "step", "total_steps", "epoch", "metrics"}
                    for the driver to print (run_job does this).
        artifacts   bool, default True: loss curve + workload artifacts at the end.
        resume_from ray.train.Checkpoint|None: start from this checkpoint (one this loop
                    saved) when Ray Train has none for this run (sweeps: restore / PBT clone).
        timing_warmup_steps  int: steps excluded from the final "train_steps_per_s".
        preempt_token  str|None: the driver's stop key (runner/preempt.py). When it is set
                    in Ray's KV the ranks checkpoint after the current step and return;
                    rank 0 queues {"kind": "preempted", "step": ...}.

    Resume order: Ray Train's latest checkpoint of this run; else the newest complete
    checkpoint in this run's storage folder (one a dying worker left unregistered); else
    resume_from. A checkpoint restores every engine (weights, optimizer, ZeRO shards), the
    rank's generators and the position in the data (epoch, batch), so the resumed run sees
    the batches it had not seen.

    Reports (session.report, all ranks, rank 0's values are the ones kept) happen after
    every evaluation: each epoch, or every training.eval_every_steps, plus at each
    checkpoint.every_steps (with a checkpoint) and once at the end (with a checkpoint).
    Every report holds the workload's eval metrics (so Tune's ASHA/PBT can act on each),
    the mean training losses since the last report, "step", "epoch" and "total_steps";
    the final one also "trainyard_done": 1 and, when logged, model info as strings.
    """
    Trainer.from_config(config).train()


def step_delay_for_test(delay: str | None, until: str | None) -> float:
    """Tests only: the seconds to sleep after a step ($TRAINYARD_TEST_STEP_DELAY_S), none once
    the file named by $TRAINYARD_TEST_STEP_DELAY_UNTIL exists."""
    if not delay:
        return 0.0
    if until and os.path.exists(until):
        return 0.0
    return float(delay)


def _maybe_crash_for_test(env_value: str | None, *, rank: int, step: int, notice: bool = False) -> None:
    """Tests only: simulate a worker dying once, or its node's stop notice (SIGTERM to this
    worker's process, as a spot reclaim or a drained pod sends it); a marker file makes it
    happen once."""
    if not env_value:
        return
    want_rank, want_step, marker = env_value.split(":", 2)
    if rank == int(want_rank) and step == int(want_step) and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(f"rank {rank} {'got SIGTERM' if notice else 'exited'} at step {step}\n")
        sys.stdout.flush()
        if notice:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        os._exit(13)
