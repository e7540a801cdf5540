"""Web console: users (argon2 hashes only), sessions (ids stored hashed), device uploads in progress, and the
indexes its device list and live joins need.

Revision ID: 0003_console
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_console"
down_revision = "0002"
branch_labels = None
depends_on = None


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_index("ix_devices_owner_account_dev_eui", "devices", ["owner_account", "dev_eui"])
    op.create_index(
        "ix_devices_manufacturer_owner_account_dev_eui", "devices", ["manufacturer", "owner_account", "dev_eui"]
    )
    op.create_index("ix_devices_owner_account_name", "devices", ["owner_account", "name"])
    op.create_index("ix_devices_manufacturer_owner_account_name", "devices", ["manufacturer", "owner_account", "name"])
    op.create_index("ix_devices_name", "devices", ["name"])
    op.create_index("ix_events_dev_eui_seq", "events", ["dev_eui", "seq"])
    op.create_table(
        "console_users",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        _now("created_at"),
        sa.ForeignKeyConstraint(
            ["account"], ["accounts.id"], name="fk_console_users_account_accounts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_console_users"),
        sa.UniqueConstraint("username", name="uq_console_users_username"),
    )
    op.create_index("ix_console_users_account", "console_users", ["account"])
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("key_id", sa.String(12), nullable=True),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        _now("created_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account"], ["accounts.id"], name="fk_console_sessions_account_accounts", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["console_users.id"], name="fk_console_sessions_user_id_console_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id_hash", name="pk_console_sessions"),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_table(
        "console_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        _now("started_at"),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_console_jobs"),
    )


def downgrade() -> None:
    op.drop_table("console_jobs")
    op.drop_index("ix_console_sessions_expires_at", "console_sessions")
    op.drop_table("console_sessions")
    op.drop_index("ix_console_users_account", "console_users")
    op.drop_table("console_users")
    op.drop_index("ix_events_dev_eui_seq", "events")
    op.drop_index("ix_devices_name", "devices")
    op.drop_index("ix_devices_manufacturer_owner_account_name", "devices")
    op.drop_index("ix_devices_owner_account_name", "devices")
    op.drop_index("ix_devices_manufacturer_owner_account_dev_eui", "devices")
    op.drop_index("ix_devices_owner_account_dev_eui", "devices")
