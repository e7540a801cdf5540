"""Persistence of accounts and their API keys (only SHA-256 digests of the secrets)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from jsd.registry.errors import RegistryError
from jsd.registry.journal import AuditRecord, JournalledStore, utc, write_records
from jsd.registry.tables import accounts, api_keys

__all__ = ["AccountExists", "AccountRecord", "AccountStore", "ApiKeyRecord"]


class AccountExists(RegistryError):
    """An account with this id exists already."""


@dataclass(frozen=True)
class AccountRecord:
    id: str
    kind: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    account: str
    secret_hash: str
    scopes: tuple[str, ...]
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    account_kind: str | None = None


class AccountStore(JournalledStore):
    """Accounts and API keys; the account comes with its first key, in one transaction."""

    async def create_account(
        self, account_id: str, kind: str, name: str, key: ApiKeyRecord, audit: AuditRecord
    ) -> None:
        try:
            async with self._writer.begin() as conn:
                await conn.execute(insert(accounts), {"id": account_id, "kind": kind, "name": name})
                await conn.execute(insert(api_keys), _key_row(key))
                await write_records(conn, [audit])
        except IntegrityError as exc:
            raise AccountExists(f"account {account_id!r} exists already") from exc

    async def get_account(self, account_id: str) -> AccountRecord | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        return None if row is None else AccountRecord(row.id, row.kind, row.name, utc(row.created_at))

    async def list_accounts(self) -> list[AccountRecord]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(accounts).order_by(accounts.c.id))
            return [AccountRecord(r.id, r.kind, r.name, utc(r.created_at)) for r in rows]

    async def add_api_key(self, key: ApiKeyRecord, audit: AuditRecord) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(insert(api_keys), _key_row(key))
            await write_records(conn, [audit])

    async def api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key with its account's kind, revoked or not (the caller decides)."""
        statement = select(api_keys, accounts.c.kind).join(accounts, accounts.c.id == api_keys.c.account)
        async with self._reader.connect() as conn:
            row = (await conn.execute(statement.where(api_keys.c.key_id == key_id))).first()
        return None if row is None else _key_record(row, row.kind)

    async def list_api_keys(self, account: str) -> list[ApiKeyRecord]:
        statement = select(api_keys).where(api_keys.c.account == account).order_by(api_keys.c.created_at)
        async with self._reader.connect() as conn:
            return [_key_record(row, None) for row in await conn.execute(statement)]

    async def revoke_api_key(self, key_id: str, audit: AuditRecord) -> bool:
        return await self._one_row(
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC)),
            [audit],
        )


def _key_row(key: ApiKeyRecord) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "account": key.account,
        "secret_hash": key.secret_hash,
        "scopes": " ".join(sorted(key.scopes)),
    }


def _key_record(row: Any, kind: str | None) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row.key_id,
        account=row.account,
        secret_hash=row.secret_hash,
        scopes=tuple(row.scopes.split()),
        created_at=utc(row.created_at),
        revoked_at=utc(row.revoked_at),
        account_kind=kind,
    )
