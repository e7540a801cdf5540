"""SQLAlchemy Core tables: the schema the registry queries and alembic's autogenerate target.

Identifiers are stored as lowercase hex so the database stays readable with any SQL client.
Migrations under `migrations/versions` are frozen copies; a test checks they still match these tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.schema import SchemaItem

__all__ = [
    "accounts",
    "api_keys",
    "astks",
    "audit_log",
    "command_replies",
    "console_jobs",
    "console_sessions",
    "console_users",
    "device_nonces",
    "devices",
    "events",
    "fresh_nonces_row",
    "import_rows",
    "metadata",
    "network_servers",
    "outbox",
    "rate_limits",
    "retired_versions",
    "roaming_agreements",
    "session_keys",
    "spent_owner_tokens",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


_SERIAL = BigInteger().with_variant(Integer(), "sqlite")
"""64-bit ids (events run past 2**31 in weeks of joins); SQLite's rowid alias must be spelled INTEGER."""


def _table(name: str, *items: SchemaItem) -> Table:
    return Table(name, metadata, *items)


def _cascade(target: str) -> ForeignKey:
    """A reference to `target` ("table.column") whose row's deletion deletes the referring row."""
    return ForeignKey(target, ondelete="CASCADE")


def _now_column(name: str) -> Column[datetime]:
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


devices = _table(
    "devices",
    Column("dev_eui", String(16), primary_key=True),
    Column("join_eui", String(16), nullable=False, index=True),
    Column("mac_version", String(8), nullable=False),
    Column("hsm_group", String(64), nullable=False),
    Column("app_key_blob", LargeBinary, nullable=False),
    Column("nwk_key_blob", LargeBinary, nullable=True),
    Column("home_net_id", String(6), nullable=True),
    Column("astk_label", String(128), nullable=True),
    Column("owner_account", String(128), nullable=True),
    Column("name", String(255), nullable=True),
    _now_column("created_at"),
    _now_column("updated_at"),
    Column("manufacturer", String(64), nullable=True, index=True),
    Column("owner_token_hash", String(64), nullable=True),
    Column("secure_element", Boolean, nullable=False, server_default=false()),
    Column("admin_info", Text, nullable=True),
    Column("profile_id", String(8), nullable=False, server_default="00000000"),
    Column("serial", String(32), nullable=True),
    Column("keys_exported", Boolean, nullable=False, server_default=false()),
    Column("import_digest", String(64), nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
)
Index(None, devices.c.owner_account)
Index(None, devices.c.owner_token_hash, unique=True)
# The console's device list: keyset pages in DevEUI order per owner or maker, and search by name prefix.
Index(None, devices.c.owner_account, devices.c.dev_eui)
Index(None, devices.c.manufacturer, devices.c.owner_account, devices.c.dev_eui)
Index(None, devices.c.owner_account, devices.c.name)
Index(None, devices.c.manufacturer, devices.c.owner_account, devices.c.name)
Index(None, devices.c.name)

device_nonces = _table(
    "device_nonces",
    Column("dev_eui", String(16), _cascade("devices.dev_eui"), primary_key=True),
    Column("version", Integer, nullable=False, server_default=text("0")),
    Column("join_nonce", Integer, nullable=False, server_default=text("0")),
    Column("last_dev_nonce", Integer, nullable=True),
    Column("used_dev_nonces", LargeBinary, nullable=False),
    Column("rj_count0", Integer, nullable=True),
    Column("rj_count1", Integer, nullable=True),
    _now_column("updated_at"),
)


retired_versions = _table(
    "retired_versions",
    Column("dev_eui", String(16), primary_key=True),
    Column("version", Integer, nullable=False),
    _now_column("retired_at"),
)
"""The last nonce-state version of each deleted device: a re-import continues above it (`jsd.registry.versions`)."""


def fresh_nonces_row(dev_eui: str, version: int = 0) -> dict[str, Any]:
    """The nonce state a newly provisioned device starts with: no JoinNonce issued, no DevNonce seen."""
    return {"dev_eui": dev_eui, "version": version, "join_nonce": 0, "used_dev_nonces": b""}


def reset_nonces_values() -> dict[str, Any]:
    """What forgetting a device's DevNonces sets (its nonce store was wiped); the JoinNonce keeps counting."""
    return {
        "version": device_nonces.c.version + 1,
        "last_dev_nonce": None,
        "used_dev_nonces": b"",
        "rj_count0": None,
        "rj_count1": None,
        "updated_at": func.now(),
    }


network_servers = _table(
    "network_servers",
    Column("net_id", String(6), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("kek_label", String(128), nullable=False),
    Column("token_hash", String(64), nullable=True, unique=True),
    Column("cert_fingerprint", String(64), nullable=True, unique=True),
    Column("answer_url", String(2048), nullable=True),
    Column("async_mode", Boolean, nullable=False),
    _now_column("created_at"),
)

session_keys = _table(
    "session_keys",
    Column("session_key_id", String(32), primary_key=True),
    Column("dev_eui", String(16), _cascade("devices.dev_eui"), nullable=False),
    Column("hsm_group", String(64), nullable=False),
    Column("app_s_key_blob", LargeBinary, nullable=False),
    Column("join_nonce", Integer, nullable=False),
    Column("dev_nonce", Integer, nullable=False),
    _now_column("created_at"),
)
Index(None, session_keys.c.dev_eui, session_keys.c.join_nonce)

accounts = _table(
    "accounts",
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(255), nullable=False),
    _now_column("created_at"),
)

api_keys = _table(
    "api_keys",
    Column("key_id", String(12), primary_key=True),
    Column("account", String(64), _cascade("accounts.id"), nullable=False, index=True),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", String(255), nullable=False),
    _now_column("created_at"),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

spent_owner_tokens = _table(
    "spent_owner_tokens",
    Column("token_hash", String(64), primary_key=True),
    _now_column("spent_at"),
)

astks = _table(
    "astks",
    Column("label", String(64), primary_key=True),
    Column("account", String(64), _cascade("accounts.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("origin", String(16), nullable=False),
    Column("exported", Boolean, nullable=False, server_default=false()),
    _now_column("created_at"),
    UniqueConstraint("account", "name", name="uq_astks_account_name"),
)

audit_log = _table(
    "audit_log",
    Column("id", _SERIAL, primary_key=True, autoincrement=True),
    _now_column("at"),
    Column("account", String(64), nullable=True, index=True),
    Column("key_id", String(12), nullable=True),
    Column("source", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("dev_eui", String(16), nullable=True, index=True),
    Column("owner_account", String(64), nullable=True, index=True),
    Column("details", Text, nullable=False),
)

events = _table(
    "events",
    Column("seq", _SERIAL, primary_key=True, autoincrement=True),
    Column("event_id", String(32), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("account", String(64), nullable=False),
    Column("dev_eui", String(16), nullable=True),
    _now_column("time"),
    Column("data", Text, nullable=False),
)
Index(None, events.c.account, events.c.seq)
Index(None, events.c.dev_eui, events.c.seq)  # the console's live joins of one device

outbox = _table(
    "outbox",
    Column("event_id", String(32), primary_key=True),
    ForeignKeyConstraint(["event_id"], ["events.event_id"], ondelete="CASCADE"),
)

rate_limits = _table(
    "rate_limits",
    Column("bucket", String(96), primary_key=True),
    Column("window_start", Integer, nullable=False),
    Column("count", Integer, nullable=False),
)

roaming_agreements = _table(
    "roaming_agreements",
    Column("home_net_id", String(6), primary_key=True),
    Column("visited_net_id", String(6), primary_key=True),
    _now_column("created_at"),
)

command_replies = _table(
    "command_replies",
    Column("account", String(64), primary_key=True),
    Column("request_id", String(64), primary_key=True),
    Column("reply", Text, nullable=False),
    _now_column("created_at"),
)

import_rows = _table(
    "import_rows",
    Column("batch_id", String(32), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("dev_eui", String(16), nullable=False),
    Column("row", LargeBinary, nullable=False),
    _now_column("created_at"),
)

# -- the web console (jsd.ui): people who sign in, their sessions, and device uploads in progress --

console_users = _table(
    "console_users",
    Column("id", String(32), primary_key=True),
    Column("account", String(64), _cascade("accounts.id"), nullable=False, index=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    _now_column("created_at"),
)

console_sessions = _table(
    "console_sessions",
    Column("id_hash", String(64), primary_key=True),
    Column("account", String(64), _cascade("accounts.id"), nullable=False),
    Column("user_id", String(32), _cascade("console_users.id"), nullable=True),
    Column("key_id", String(12), nullable=True),
    Column("label", String(128), nullable=False),
    Column("csrf", String(64), nullable=False),
    _now_column("created_at"),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

console_jobs = _table(
    "console_jobs",
    Column("id", String(32), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("session_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False),
    _now_column("started_at"),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("summary", Text, nullable=False),
    Column("result", LargeBinary, nullable=True),
)
