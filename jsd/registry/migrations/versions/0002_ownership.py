"""Ownership workflow: accounts, API keys, claims, ASTKs, audit log, events, outbox and import staging.

Claim state is kept on the devices; the staging rows hold a bulk import's checked rows until it commits.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jsd.registry.migrations.columns import SERIAL, cascade, now, optional, primary_key, required, unique, varchar

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


_DEVICE_COLUMNS = (
    ("manufacturer", sa.String(64), True, None),
    ("owner_token_hash", sa.String(64), True, None),
    ("secure_element", sa.Boolean(), False, sa.false()),
    ("admin_info", sa.Text(), True, None),
    ("profile_id", sa.String(8), False, "00000000"),
    ("serial", sa.String(32), True, None),
    ("keys_exported", sa.Boolean(), False, sa.false()),
    ("import_digest", sa.String(64), True, None),
    ("claimed_at", sa.DateTime(timezone=True), True, None),
)


def upgrade() -> None:
    for name, type_, nullable, default in _DEVICE_COLUMNS:
        op.add_column("devices", sa.Column(name, type_, nullable=nullable, server_default=default))
    op.create_index("ix_devices_manufacturer", "devices", ["manufacturer"])
    op.create_index("ix_devices_owner_account", "devices", ["owner_account"])
    op.create_index("ix_devices_owner_token_hash", "devices", ["owner_token_hash"], unique=True)

    op.create_table(
        "accounts",
        varchar("id", 64), varchar("kind", 16), varchar("name", 255), now("created_at"),
        primary_key("accounts", "id"),
    )  # fmt: skip
    op.create_table(
        "api_keys",
        varchar("key_id", 12), varchar("account", 64), varchar("secret_hash", 64), varchar("scopes", 255),
        now("created_at"), optional("revoked_at", sa.DateTime(timezone=True)),
        cascade("api_keys", "account", "accounts.id"),
        primary_key("api_keys", "key_id"),
    )  # fmt: skip
    op.create_index("ix_api_keys_account", "api_keys", ["account"])
    op.create_table(
        "spent_owner_tokens",
        varchar("token_hash", 64), now("spent_at"),
        primary_key("spent_owner_tokens", "token_hash"),
    )  # fmt: skip
    op.create_table(
        "astks",
        varchar("label", 64), varchar("account", 64), varchar("name", 64), varchar("origin", 16),
        required("exported", sa.Boolean(), server_default=sa.false()), now("created_at"),
        cascade("astks", "account", "accounts.id"),
        primary_key("astks", "label"),
        unique("astks", "account", "name"),
    )  # fmt: skip
    op.create_table(
        "audit_log",
        required("id", SERIAL, autoincrement=True), now("at"),
        varchar("account", 64, nullable=True), varchar("key_id", 12, nullable=True),
        varchar("source", 128), varchar("action", 64),
        varchar("dev_eui", 16, nullable=True), varchar("owner_account", 64, nullable=True),
        required("details", sa.Text()),
        primary_key("audit_log", "id"),
    )  # fmt: skip
    for column in ("account", "dev_eui", "owner_account"):
        op.create_index(f"ix_audit_log_{column}", "audit_log", [column])
    _make_append_only("audit_log")
    op.create_table(
        "events",
        required("seq", SERIAL, autoincrement=True), varchar("event_id", 32), varchar("type", 64),
        varchar("account", 64), varchar("dev_eui", 16, nullable=True), now("time"), required("data", sa.Text()),
        primary_key("events", "seq"),
        unique("events", "event_id"),
    )  # fmt: skip
    op.create_index("ix_events_account_seq", "events", ["account", "seq"])
    op.create_table(
        "outbox",
        varchar("event_id", 32),
        cascade("outbox", "event_id", "events.event_id"),
        primary_key("outbox", "event_id"),
    )
    op.create_table(
        "rate_limits",
        varchar("bucket", 96), required("window_start", sa.Integer()), required("count", sa.Integer()),
        primary_key("rate_limits", "bucket"),
    )  # fmt: skip
    op.create_table(
        "roaming_agreements",
        varchar("home_net_id", 6), varchar("visited_net_id", 6), now("created_at"),
        primary_key("roaming_agreements", "home_net_id", "visited_net_id"),
    )  # fmt: skip
    op.create_table(
        "command_replies",
        varchar("account", 64), varchar("request_id", 64), required("reply", sa.Text()), now("created_at"),
        primary_key("command_replies", "account", "request_id"),
    )  # fmt: skip
    op.create_table(
        "import_rows",
        varchar("batch_id", 32), required("line", sa.Integer()), varchar("dev_eui", 16),
        required("row", sa.LargeBinary()), now("created_at"),
        primary_key("import_rows", "batch_id", "line"),
    )  # fmt: skip


def _make_append_only(table: str) -> None:
    """Refuse UPDATE and DELETE in the database itself, whatever code runs against it."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION '{table} is append-only'; END $$"""
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
        )
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")
    for table in (
        "import_rows",
        "command_replies",
        "roaming_agreements",
        "rate_limits",
        "outbox",
        "events",
        "audit_log",
        "astks",
        "spent_owner_tokens",
        "api_keys",
        "accounts",
    ):
        op.drop_table(table)
    for index in ("ix_devices_owner_token_hash", "ix_devices_owner_account", "ix_devices_manufacturer"):
        op.drop_index(index, table_name="devices")
    with op.batch_alter_table("devices") as batch:
        for name, *_ in reversed(_DEVICE_COLUMNS):
            batch.drop_column(name)
