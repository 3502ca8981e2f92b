"""Indexes for the jobs list: newest first by (created_at, id), keyset-paged, under a project
or owner filter, so a page and its total stay index reads at 10,000s of jobs.

Revision ID: 0007
Revises: 0006
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_INDEXES = {
    "ix_jobs_created_id": ["created_at", "id"],
    "ix_jobs_project_created": ["project", "created_at", "id"],
    "ix_jobs_owner_created": ["owner", "created_at", "id"],
}


def upgrade() -> None:
    for name, columns in _INDEXES.items():
        op.create_index(name, "jobs", columns)


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, "jobs")
