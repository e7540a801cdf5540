"""Accounts and their API keys: who is calling (`authenticate`) and who may make whom.

A generated key is returned once and stored only as a SHA-256 digest of its secret part.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from jsd.ownership.model import (
    ACCOUNT_ID_RE,
    DEFAULT_SCOPES,
    SCOPES,
    AccountKind,
    AccountView,
    ApiKeyView,
    Conflict,
    Forbidden,
    NewApiKey,
    NoSuchResource,
    Principal,
    Unauthenticated,
)
from jsd.ownership.rules import DUMMY_HASH, audit, invalid, need, plain_text
from jsd.registry.accounts import AccountExists, AccountRecord, AccountStore, ApiKeyRecord

__all__ = ["AccountService"]

_ACCOUNT_ID = re.compile(ACCOUNT_ID_RE)
_API_KEY = re.compile(r"jsd_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class AccountService:
    """Accounts (operators make them) and API keys (an account makes its own, never with more scopes)."""

    def __init__(self, store: AccountStore) -> None:
        self._store = store

    async def authenticate(self, api_key: str, source: str) -> Principal:
        """The principal behind an API key; unknown, malformed and revoked keys fail alike."""
        match = _API_KEY.fullmatch(api_key.strip()) if isinstance(api_key, str) else None
        record = await self._store.api_key(match.group(1)) if match else None
        presented = _secret_hash(match.group(2)) if match else DUMMY_HASH
        stored = record.secret_hash if record is not None else DUMMY_HASH
        if not hmac.compare_digest(presented, stored) or record is None or record.revoked_at is not None:
            raise Unauthenticated("unknown or revoked API key")
        kind = AccountKind(record.account_kind or AccountKind.SUBSCRIBER)
        return Principal(
            account=record.account,
            kind=kind,
            scopes=frozenset(record.scopes) & DEFAULT_SCOPES[kind],
            key_id=record.key_id,
            source=source,
        )

    async def create_account(
        self, p: Principal, account_id: str, kind: str, name: str | None
    ) -> tuple[AccountView, NewApiKey]:
        need(p, "admin")
        if not isinstance(account_id, str) or not _ACCOUNT_ID.fullmatch(account_id):
            raise invalid("id", f"an account id matches {ACCOUNT_ID_RE}")
        try:
            account_kind = AccountKind(kind)
        except ValueError:
            raise invalid("kind", "one of manufacturer, subscriber, operator") from None
        name = plain_text(name, "name", 255) or account_id
        key, record = _new_key(account_id, DEFAULT_SCOPES[account_kind])
        try:
            await self._store.create_account(
                account_id,
                account_kind.value,
                name,
                record,
                audit(p, "account.created", details={"account": account_id, "kind": account_kind.value}),
            )
        except AccountExists:
            raise Conflict(f"account {account_id!r} exists already") from None
        return _account_view(await self._account(account_id)), key

    async def list_accounts(self, p: Principal) -> list[AccountView]:
        need(p, "admin")
        return [_account_view(a) for a in await self._store.list_accounts()]

    async def get_account(self, p: Principal, account_id: str) -> AccountView:
        _self_or_admin(p, account_id)
        return _account_view(await self._account(account_id))

    async def create_api_key(self, p: Principal, account_id: str, scopes: Iterable[str] | None) -> NewApiKey:
        _self_or_admin(p, account_id)
        account = await self._account(account_id)
        allowed = DEFAULT_SCOPES[AccountKind(account.kind)]
        wanted = allowed if scopes is None else _scopes(scopes)
        if not wanted <= allowed:
            raise invalid("scopes", f"not allowed for a {account.kind} account: {' '.join(sorted(wanted - allowed))}")
        if not p.is_operator and not wanted <= p.scopes:
            raise Forbidden("a key cannot grant scopes its creator lacks")
        key, record = _new_key(account_id, wanted)
        await self._store.add_api_key(
            record, audit(p, "api_key.created", details={"account": account_id, "key_id": key.key_id})
        )
        return key

    async def list_api_keys(self, p: Principal, account_id: str) -> list[ApiKeyView]:
        _self_or_admin(p, account_id)
        return [
            ApiKeyView(k.key_id, k.account, frozenset(k.scopes), k.created_at or datetime.now(UTC), k.revoked_at)
            for k in await self._store.list_api_keys(account_id)
        ]

    async def revoke_api_key(self, p: Principal, key_id: str) -> None:
        record = await self._store.api_key(key_id) if isinstance(key_id, str) else None
        if record is None or (not p.is_operator and record.account != p.account):
            raise NoSuchResource(f"API key {key_id!r} not found")
        revoked = await self._store.revoke_api_key(
            key_id, audit(p, "api_key.revoked", details={"account": record.account, "key_id": key_id})
        )
        if not revoked:
            raise Conflict(f"API key {key_id!r} is revoked already")

    async def _account(self, account_id: str) -> AccountRecord:
        account = await self._store.get_account(account_id)
        if account is None:
            raise NoSuchResource(f"account {account_id!r} not found")
        return account


def _self_or_admin(p: Principal, account_id: str) -> None:
    if not p.is_operator and p.account != account_id:
        raise NoSuchResource(f"account {account_id!r} not found")


def _account_view(a: AccountRecord) -> AccountView:
    return AccountView(a.id, AccountKind(a.kind), a.name, a.created_at)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(b"jsd-api-key\0" + secret.encode()).hexdigest()


def _scopes(scopes: Iterable[str]) -> frozenset[str]:
    if isinstance(scopes, str):
        raise invalid("scopes", "a list of scope names")
    wanted = frozenset(scopes)
    unknown = wanted - set(SCOPES)
    if unknown:
        raise invalid("scopes", f"unknown scope(s): {' '.join(sorted(map(str, unknown)))}")
    return wanted


def _new_key(account: str, scopes: frozenset[str]) -> tuple[NewApiKey, ApiKeyRecord]:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return (
        NewApiKey(key_id, account, f"jsd_{key_id}_{secret}", scopes),
        ApiKeyRecord(key_id, account, _secret_hash(secret), tuple(sorted(scopes))),
    )
