"""Worker side of test_universal_checkpoint: the real Trainer on a gloo process group of N
spawned processes, with a session that keeps its checkpoints in a folder and records, at each
checkpoint and right after each restore, the full (gathered) weights and Adam states."""
from __future__ import annotations

import json
import os
import shutil


class Stop(Exception):
    """Leave the loop after the checkpoint the phase ends with (a lost node, in short)."""


def _full_states(engines: dict) -> dict:
    """Every parameter's fp32 weights, exp_avg and exp_avg_sq gathered whole, and the optimizer's
    step counts. A collective under ZeRO-3: every rank calls it."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    out: dict = {}
    for name, engine in engines.items():
        for pname, param in engine.module.named_parameters():
            key = f"{name}.{pname}"
            out[key] = {"w": safe_get_full_fp32_param(param).detach().clone(),
                        "exp_avg": safe_get_full_optimizer_state(param, "exp_avg").detach().clone(),
                        "exp_avg_sq": safe_get_full_optimizer_state(param, "exp_avg_sq").detach().clone()}
        base = getattr(engine.optimizer, "optimizer", engine.optimizer)
        out[f"{name}.__steps__"] = sorted({float(s["step"]) for s in base.state.values() if "step" in s})
    return out


class FolderSession:
    """rank / world / checkpoint / report, as Ray Train's session gives them to the Trainer."""

    def __init__(self, *, rank: int, world: int, checkpoint_dir: str | None, save_root: str, stop_at: int | None):
        from ray.train import Checkpoint

        self.rank, self.world_size, self.local_world_size = rank, world, world
        self.checkpoint = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self.save_root, self.stop_at, self.trainer = save_root, stop_at, None
        self.reports: list[dict] = []

    def device(self):
        import torch

        return torch.device("cpu")

    def get_checkpoint(self):
        return self.checkpoint

    def report(self, metrics: dict, checkpoint=None) -> None:
        import torch
        import torch.distributed as dist

        self.reports.append({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        if checkpoint is None:
            return
        step = int(metrics["step"])
        dest = os.path.join(self.save_root, f"step-{step}")
        # every rank adds its files to one folder, as Ray Train's storage does
        shutil.copytree(checkpoint.path, dest, dirs_exist_ok=True)
        states = _full_states(self.trainer.engines.by_name)
        if self.rank == 0:
            torch.save(states, os.path.join(self.save_root, f"states-step-{step}.pt"))
        dist.barrier()
        if step == self.stop_at:
            raise Stop()


def run_phase(rank: int, world: int, port: int, jobs: list[dict], out: str) -> None:
    """Each job: {"stage", "spec", "checkpoint", "save_root", "stop_at"}; one process group for all."""
    os.environ.update({"DS_ACCELERATOR": "cpu", "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    import torch
    import torch.distributed as dist

    from trainyard.runner.trainer import Trainer

    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    for job in jobs:
        os.makedirs(job["save_root"], exist_ok=True)
        session = FolderSession(rank=rank, world=world, checkpoint_dir=job["checkpoint"],
                                save_root=job["save_root"], stop_at=job["stop_at"])
        trainer = Trainer.from_config({"spec": job["spec"], "job_id": f"uc-{job['stage']}", "mlflow": None,
                                       "session": session, "log_model": False})
        session.trainer = trainer
        loaded = _full_states(trainer.engines.by_name) if job["checkpoint"] else None
        if rank == 0 and loaded is not None:
            torch.save(loaded, os.path.join(job["save_root"], "loaded.pt"))
        try:
            trainer.train()
        except Stop:
            pass
        results[job["stage"]] = {"micro": trainer.micro, "gas": trainer.steps.gas, "resize": trainer.resize,
                                 "reports": session.reports}
        dist.barrier()
    if rank == 0:
        with open(out, "w") as fh:
            json.dump(results, fh, default=str)
    dist.destroy_process_group()
