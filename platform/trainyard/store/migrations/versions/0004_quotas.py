"""Quotas and budgets per project, and the usage ledger that budgets are counted from.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

from trainyard.store.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("weight", sa.Float, nullable=False, server_default="1"))
        batch.add_column(sa.Column("quota", sa.JSON))
        batch.add_column(sa.Column("budget", sa.JSON))
        batch.add_column(sa.Column("quota_updated_at", UTCDateTime))
    op.create_table(
        "usage",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime, nullable=False),
        sa.Column("resources", sa.JSON, nullable=False),
    )
    op.create_index("ix_usage_project_ended", "usage", ["project", "ended_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_project_ended", "usage")
    op.drop_table("usage")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("quota_updated_at")
        batch.drop_column("budget")
        batch.drop_column("quota")
        batch.drop_column("weight")
