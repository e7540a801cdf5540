"""Initial registry schema: devices, their nonce state, network servers, session keys.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jsd.registry.migrations.columns import cascade, now, optional, primary_key, required, unique, varchar

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        varchar("dev_eui", 16), varchar("join_eui", 16), varchar("mac_version", 8), varchar("hsm_group", 64),
        required("app_key_blob", sa.LargeBinary()), optional("nwk_key_blob", sa.LargeBinary()),
        varchar("home_net_id", 6, nullable=True), varchar("astk_label", 128, nullable=True),
        varchar("owner_account", 128, nullable=True), varchar("name", 255, nullable=True),
        now("created_at"), now("updated_at"),
        primary_key("devices", "dev_eui"),
    )  # fmt: skip
    op.create_index("ix_devices_join_eui", "devices", ["join_eui"])

    zero = {"server_default": sa.text("0")}
    op.create_table(
        "device_nonces",
        varchar("dev_eui", 16),
        required("version", sa.Integer(), **zero), required("join_nonce", sa.Integer(), **zero),
        optional("last_dev_nonce", sa.Integer()), required("used_dev_nonces", sa.LargeBinary()),
        optional("rj_count0", sa.Integer()), optional("rj_count1", sa.Integer()),
        now("updated_at"),
        cascade("device_nonces", "dev_eui", "devices.dev_eui"),
        primary_key("device_nonces", "dev_eui"),
    )  # fmt: skip

    op.create_table(
        "network_servers",
        varchar("net_id", 6), varchar("name", 255), varchar("kek_label", 128),
        varchar("token_hash", 64, nullable=True), varchar("cert_fingerprint", 64, nullable=True),
        varchar("answer_url", 2048, nullable=True), required("async_mode", sa.Boolean()),
        now("created_at"),
        primary_key("network_servers", "net_id"),
        unique("network_servers", "token_hash"), unique("network_servers", "cert_fingerprint"),
    )  # fmt: skip

    op.create_table(
        "session_keys",
        varchar("session_key_id", 32), varchar("dev_eui", 16), varchar("hsm_group", 64),
        required("app_s_key_blob", sa.LargeBinary()),
        required("join_nonce", sa.Integer()), required("dev_nonce", sa.Integer()),
        now("created_at"),
        cascade("session_keys", "dev_eui", "devices.dev_eui"),
        primary_key("session_keys", "session_key_id"),
    )  # fmt: skip
    op.create_index("ix_session_keys_dev_eui_join_nonce", "session_keys", ["dev_eui", "join_nonce"])


def downgrade() -> None:
    op.drop_table("session_keys")
    op.drop_table("network_servers")
    op.drop_table("device_nonces")
    op.drop_index("ix_devices_join_eui", table_name="devices")
    op.drop_table("devices")
