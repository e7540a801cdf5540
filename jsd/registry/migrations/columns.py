"""Column and constraint builders for the migration scripts, with the names `jsd.registry.tables` gives.

Migrations are frozen: every revision must keep emitting the DDL it emitted when it shipped. So what a
builder here produces never changes; a new shape gets a new builder.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""64-bit ids; SQLite's rowid alias must be spelled INTEGER."""


def required(name: str, type_: sa.types.TypeEngine[Any], **options: Any) -> sa.Column[Any]:
    """NOT NULL."""
    return sa.Column(name, type_, nullable=False, **options)


def optional(name: str, type_: sa.types.TypeEngine[Any]) -> sa.Column[Any]:
    return sa.Column(name, type_, nullable=True)


def varchar(name: str, length: int, *, nullable: bool = False) -> sa.Column[Any]:
    """A VARCHAR(length), NOT NULL unless `nullable`."""
    return sa.Column(name, sa.String(length), nullable=nullable)


def now(name: str) -> sa.Column[Any]:
    """A timestamp set by the database when the row is written."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def primary_key(table: str, *columns: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*columns, name=f"pk_{table}")


def unique(table: str, *columns: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*columns, name=f"uq_{table}_{'_'.join(columns)}")


def cascade(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    """`column` refers to `target` ("table.column"); deleting the target row deletes this one."""
    name = f"fk_{table}_{column}_{target.split('.')[0]}"
    return sa.ForeignKeyConstraint([column], [target], name=name, ondelete="CASCADE")
