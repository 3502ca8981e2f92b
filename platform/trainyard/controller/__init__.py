"""The control loop (loop.Controller) and what the API asks of it (service.JobService)."""
from trainyard.controller.loop import Controller
from trainyard.controller.service import JobService

__all__ = ["Controller", "JobService"]
