"""Web console: users, sessions, device uploads in progress, and the indexes its pages need.

Users keep argon2 hashes only and sessions their ids hashed; the indexes serve the device list and live joins.

Revision ID: 0003_console
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jsd.registry.migrations.columns import cascade, now, optional, primary_key, required, unique, varchar

revision = "0003_console"
down_revision = "0002"
branch_labels = None
depends_on = None


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
        varchar("id", 32), varchar("account", 64), varchar("username", 64), varchar("password_hash", 255),
        now("created_at"),
        cascade("console_users", "account", "accounts.id"),
        primary_key("console_users", "id"),
        unique("console_users", "username"),
    )  # fmt: skip
    op.create_index("ix_console_users_account", "console_users", ["account"])
    op.create_table(
        "console_sessions",
        varchar("id_hash", 64), varchar("account", 64), varchar("user_id", 32, nullable=True),
        varchar("key_id", 12, nullable=True), varchar("label", 128), varchar("csrf", 64),
        now("created_at"), required("expires_at", sa.DateTime(timezone=True)),
        cascade("console_sessions", "account", "accounts.id"),
        cascade("console_sessions", "user_id", "console_users.id"),
        primary_key("console_sessions", "id_hash"),
    )  # fmt: skip
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_table(
        "console_jobs",
        varchar("id", 32), varchar("account", 64), varchar("session_hash", 64), varchar("state", 16),
        required("total", sa.Integer()), required("done", sa.Integer()),
        now("started_at"), optional("finished_at", sa.DateTime(timezone=True)),
        required("summary", sa.Text()), optional("result", sa.LargeBinary()),
        primary_key("console_jobs", "id"),
    )  # fmt: skip


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
