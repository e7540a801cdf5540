"""SQLAlchemy Core tables: the schema the registry queries and alembic's autogenerate target.

Identifiers are stored as lowercase hex so the database stays readable with any SQL client.
Migrations under `migrations/versions` are frozen copies; a test checks they still match these tables.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    text,
)

__all__ = ["device_nonces", "devices", "metadata", "network_servers", "session_keys"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _now_column(name: str) -> Column[datetime]:
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


devices = Table(
    "devices",
    metadata,
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
)

device_nonces = Table(
    "device_nonces",
    metadata,
    Column(
        "dev_eui",
        String(16),
        ForeignKey("devices.dev_eui", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version", Integer, nullable=False, server_default=text("0")),
    Column("join_nonce", Integer, nullable=False, server_default=text("0")),
    Column("last_dev_nonce", Integer, nullable=True),
    Column("used_dev_nonces", LargeBinary, nullable=False),
    Column("rj_count0", Integer, nullable=True),
    Column("rj_count1", Integer, nullable=True),
    _now_column("updated_at"),
)

network_servers = Table(
    "network_servers",
    metadata,
    Column("net_id", String(6), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("kek_label", String(128), nullable=False),
    Column("token_hash", String(64), nullable=True, unique=True),
    Column("cert_fingerprint", String(64), nullable=True, unique=True),
    Column("answer_url", String(2048), nullable=True),
    Column("async_mode", Boolean, nullable=False),
    _now_column("created_at"),
)

session_keys = Table(
    "session_keys",
    metadata,
    Column("session_key_id", String(32), primary_key=True),
    Column(
        "dev_eui",
        String(16),
        ForeignKey("devices.dev_eui", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("hsm_group", String(64), nullable=False),
    Column("app_s_key_blob", LargeBinary, nullable=False),
    Column("join_nonce", Integer, nullable=False),
    Column("dev_nonce", Integer, nullable=False),
    _now_column("created_at"),
)
Index(None, session_keys.c.dev_eui, session_keys.c.join_nonce)
