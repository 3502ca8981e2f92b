"""Pure scheduling policy (no Ray, no I/O). See policy.py for the rules and the hooks."""
from trainyard.scheduler.policy import (DISPATCH, REJECT, WAIT, ClusterView, Decision, QueuedJob,
                                        SchedulerHooks, fits, never_fits_reason, order_queue, pack,
                                        schedule, subtract_reserved, worker_bundle)

__all__ = ["DISPATCH", "REJECT", "WAIT", "ClusterView", "Decision", "QueuedJob", "SchedulerHooks",
           "fits", "never_fits_reason", "order_queue", "pack", "schedule", "subtract_reserved", "worker_bundle"]
