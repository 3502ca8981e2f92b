"""Elastic jobs: the worker count the scheduler granted an attempt (its quota's room) and the
live world size its progress lines last reported, so that reservations, quota use and the
budgets count what the job holds, not its min.

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("workers_granted", sa.Integer))
        batch.add_column(sa.Column("workers_live", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("workers_live")
        batch.drop_column("workers_granted")
