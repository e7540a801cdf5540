"""The last nonce-state version of each deleted device, so a re-imported DevEUI never repeats a version.

Revision ID: 0004_versions
Revises: 0003_console
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jsd.registry.migrations.columns import now, primary_key, required, varchar

revision = "0004_versions"
down_revision = "0003_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = (varchar("dev_eui", 16), required("version", sa.Integer()), now("retired_at"))
    op.create_table("retired_versions", *columns, primary_key("retired_versions", "dev_eui"))


def downgrade() -> None:
    op.drop_table("retired_versions")
