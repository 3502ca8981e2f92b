"""Pure scheduling policy (no Ray, no I/O). See policy.py for the rules and the hooks, and
plan.py for the multi-project tick (quotas, budgets, fair share, preemption, backfill,
placement, why pending)."""
from trainyard.scheduler.policy import (DISPATCH, REJECT, WAIT, ClusterView, Decision, QueuedJob,
                                        SchedulerHooks, fits, never_fits_reason, order_queue, pack,
                                        schedule, subtract_reserved, worker_bundle)
from trainyard.scheduler.elastic import grant_workers, held_workers
from trainyard.scheduler.model import Budget, Project, Quota, RunningJob, TickConfig, UsageRecord
from trainyard.scheduler.plan import Dispatch, TickPlan, plan_tick
from trainyard.scheduler.reasons import Pending, Reason

__all__ = ["DISPATCH", "REJECT", "WAIT", "ClusterView", "Decision", "QueuedJob", "SchedulerHooks",
           "fits", "never_fits_reason", "order_queue", "pack", "schedule", "subtract_reserved", "worker_bundle",
           "Budget", "Project", "Quota", "RunningJob", "TickConfig", "UsageRecord", "Dispatch", "TickPlan",
           "plan_tick", "Pending", "Reason", "grant_workers", "held_workers"]
