"""The last nonce-state version of each deleted device, so a re-imported DevEUI never repeats a version.

Revision ID: 0004_versions
Revises: 0003_console
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_versions"
down_revision = "0003_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_versions",
        sa.Column("dev_eui", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("dev_eui", name="pk_retired_versions"),
    )


def downgrade() -> None:
    op.drop_table("retired_versions")
