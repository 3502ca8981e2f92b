"""Preemption: how often a job was preempted, the time it spent being preempted, when the
current request was made; and why a usage ledger entry ended.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

from trainyard.store.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("preemptions", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("preempted_s", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("preempt_requested_at", UTCDateTime))
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("reason", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("reason")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("preempt_requested_at")
        batch.drop_column("preempted_s")
        batch.drop_column("preemptions")
