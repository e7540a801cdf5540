"""Initial registry schema: devices, their nonce state, network servers, session keys.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("dev_eui", sa.String(16), nullable=False),
        sa.Column("join_eui", sa.String(16), nullable=False),
        sa.Column("mac_version", sa.String(8), nullable=False),
        sa.Column("hsm_group", sa.String(64), nullable=False),
        sa.Column("app_key_blob", sa.LargeBinary(), nullable=False),
        sa.Column("nwk_key_blob", sa.LargeBinary(), nullable=True),
        sa.Column("home_net_id", sa.String(6), nullable=True),
        sa.Column("astk_label", sa.String(128), nullable=True),
        sa.Column("owner_account", sa.String(128), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        _now("created_at"),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("dev_eui", name="pk_devices"),
    )
    op.create_index("ix_devices_join_eui", "devices", ["join_eui"])

    op.create_table(
        "device_nonces",
        sa.Column("dev_eui", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("join_nonce", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_dev_nonce", sa.Integer(), nullable=True),
        sa.Column("used_dev_nonces", sa.LargeBinary(), nullable=False),
        sa.Column("rj_count0", sa.Integer(), nullable=True),
        sa.Column("rj_count1", sa.Integer(), nullable=True),
        _now("updated_at"),
        sa.ForeignKeyConstraint(
            ["dev_eui"],
            ["devices.dev_eui"],
            name="fk_device_nonces_dev_eui_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dev_eui", name="pk_device_nonces"),
    )

    op.create_table(
        "network_servers",
        sa.Column("net_id", sa.String(6), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kek_label", sa.String(128), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("cert_fingerprint", sa.String(64), nullable=True),
        sa.Column("answer_url", sa.String(2048), nullable=True),
        sa.Column("async_mode", sa.Boolean(), nullable=False),
        _now("created_at"),
        sa.PrimaryKeyConstraint("net_id", name="pk_network_servers"),
        sa.UniqueConstraint("token_hash", name="uq_network_servers_token_hash"),
        sa.UniqueConstraint("cert_fingerprint", name="uq_network_servers_cert_fingerprint"),
    )

    op.create_table(
        "session_keys",
        sa.Column("session_key_id", sa.String(32), nullable=False),
        sa.Column("dev_eui", sa.String(16), nullable=False),
        sa.Column("hsm_group", sa.String(64), nullable=False),
        sa.Column("app_s_key_blob", sa.LargeBinary(), nullable=False),
        sa.Column("join_nonce", sa.Integer(), nullable=False),
        sa.Column("dev_nonce", sa.Integer(), nullable=False),
        _now("created_at"),
        sa.ForeignKeyConstraint(
            ["dev_eui"],
            ["devices.dev_eui"],
            name="fk_session_keys_dev_eui_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_key_id", name="pk_session_keys"),
    )
    op.create_index("ix_session_keys_dev_eui_join_nonce", "session_keys", ["dev_eui", "join_nonce"])


def downgrade() -> None:
    op.drop_table("session_keys")
    op.drop_table("network_servers")
    op.drop_table("device_nonces")
    op.drop_index("ix_devices_join_eui", table_name="devices")
    op.drop_table("devices")
