"""Teams: users, API tokens, projects and members, the audit trail, and jobs.owner.

An install from before has one admin token and no users: its jobs become admin's, in the
projects they were submitted to; project `default` is created. The server's start then adds
user `admin` and stores the old token's hash as admin's token (api.app), so it keeps working.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

from trainyard.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(12), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("last_used_at", UTCDateTime),
        sa.Column("revoked_at", UTCDateTime),
    )
    op.create_index("ix_api_tokens_sha256", "api_tokens", ["sha256"], unique=True)
    op.create_index("ix_api_tokens_user", "api_tokens", ["user"])
    projects = op.create_table(
        "projects",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "project_members",
        sa.Column("project", sa.String(128), sa.ForeignKey("projects.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("users.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
    )
    op.create_index("ix_project_members_user", "project_members", ["user"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(128)),
        sa.Column("project", sa.String(128)),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("source_ip", sa.String(64)),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_actor", "audit_events", ["actor"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(128), nullable=False, server_default="admin"))
    # every project that jobs already name exists, and `default` always does
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    conn = op.get_bind()
    names = {row[0] for row in conn.execute(sa.text("SELECT DISTINCT project FROM jobs")) if row[0]}
    names.add("default")
    op.bulk_insert(projects, [{"name": n, "description": "" if n != "default" else "Where objects go "
                               "when their spec names no project.", "created_at": now} for n in sorted(names)])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("owner")
    op.drop_index("ix_audit_events_actor", "audit_events")
    op.drop_index("ix_audit_events_at", "audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_project_members_user", "project_members")
    op.drop_table("project_members")
    op.drop_table("projects")
    op.drop_index("ix_api_tokens_user", "api_tokens")
    op.drop_index("ix_api_tokens_sha256", "api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
