"""The SQL store: table models, repository functions (one module per table), migrations.

    from trainyard.store import Database, jobs, clusters, state
    db = Database(settings.db_url); db.upgrade()
    with db.session() as s:
        job = jobs.create_job(s, spec=..., name=..., project=..., priority=...)
"""
from trainyard.store import clusters, idempotency, jobs, state, teams
from trainyard.store.db import Database

__all__ = ["Database", "jobs", "clusters", "state", "idempotency", "teams"]
