"""Initial schema: jobs, job_events, clusters.

Revision ID: 0001
Revises:
"""
from alembic import op
import sqlalchemy as sa

from trainyard.store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("cluster", sa.String(128)),
        sa.Column("submission_id", sa.String(128)),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("package", sa.String(64)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("message", sa.Text),
        sa.Column("result", sa.JSON),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("mlflow_experiment_id", sa.String(64)),
        sa.Column("cancel_requested", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_jobs_phase", "jobs", ["phase"])
    op.create_index("ix_jobs_project", "jobs", ["project"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("from_phase", sa.String(16)),
        sa.Column("to_phase", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])
    op.create_table(
        "clusters",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("dashboard_url", sa.String(512), nullable=False),
        sa.Column("token_file", sa.String(1024)),
        sa.Column("token", sa.String(512)),
        sa.Column("max_resources", sa.JSON),
        sa.Column("last_resources", sa.JSON),
        sa.Column("last_seen_at", UTCDateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("clusters")
    op.drop_index("ix_job_events_job_id", "job_events")
    op.drop_table("job_events")
    op.drop_index("ix_jobs_created_at", "jobs")
    op.drop_index("ix_jobs_project", "jobs")
    op.drop_index("ix_jobs_phase", "jobs")
    op.drop_table("jobs")
