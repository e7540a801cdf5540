"""Ownership workflow: accounts, API keys, claim state on devices, ASTKs, audit log, events and outbox,
and the staging rows of bulk imports.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


_SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


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
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        _now("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(12), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(255), nullable=False),
        _now("created_at"),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account"], ["accounts.id"], name="fk_api_keys_account_accounts", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_id", name="pk_api_keys"),
    )
    op.create_index("ix_api_keys_account", "api_keys", ["account"])
    op.create_table(
        "spent_owner_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        _now("spent_at"),
        sa.PrimaryKeyConstraint("token_hash", name="pk_spent_owner_tokens"),
    )
    op.create_table(
        "astks",
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("exported", sa.Boolean(), nullable=False, server_default=sa.false()),
        _now("created_at"),
        sa.ForeignKeyConstraint(["account"], ["accounts.id"], name="fk_astks_account_accounts", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("label", name="pk_astks"),
        sa.UniqueConstraint("account", "name", name="uq_astks_account_name"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        _now("at"),
        sa.Column("account", sa.String(64), nullable=True),
        sa.Column("key_id", sa.String(12), nullable=True),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("dev_eui", sa.String(16), nullable=True),
        sa.Column("owner_account", sa.String(64), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    for column in ("account", "dev_eui", "owner_account"):
        op.create_index(f"ix_audit_log_{column}", "audit_log", [column])
    _make_append_only("audit_log")
    op.create_table(
        "events",
        sa.Column("seq", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("dev_eui", sa.String(16), nullable=True),
        _now("time"),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
    )
    op.create_index("ix_events_account_seq", "events", ["account", "seq"])
    op.create_table(
        "outbox",
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.event_id"], name="fk_outbox_event_id_events", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("event_id", name="pk_outbox"),
    )
    op.create_table(
        "rate_limits",
        sa.Column("bucket", sa.String(96), nullable=False),
        sa.Column("window_start", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name="pk_rate_limits"),
    )
    op.create_table(
        "roaming_agreements",
        sa.Column("home_net_id", sa.String(6), nullable=False),
        sa.Column("visited_net_id", sa.String(6), nullable=False),
        _now("created_at"),
        sa.PrimaryKeyConstraint("home_net_id", "visited_net_id", name="pk_roaming_agreements"),
    )
    op.create_table(
        "command_replies",
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        _now("created_at"),
        sa.PrimaryKeyConstraint("account", "request_id", name="pk_command_replies"),
    )
    op.create_table(
        "import_rows",
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("dev_eui", sa.String(16), nullable=False),
        sa.Column("row", sa.LargeBinary(), nullable=False),
        _now("created_at"),
        sa.PrimaryKeyConstraint("batch_id", "line", name="pk_import_rows"),
    )


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
