"""Persistence of the web console (jsd.ui): users, sessions, sign-in failure counters and device uploads.

Only hashes are stored: argon2 hashes of passwords, SHA-256 of session ids. Upload results (owner tokens) are
stored encrypted under a key only the uploading browser holds, and deleted when first downloaded. Everything
lives in the database so that any worker process (or instance) answers any request of a session.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from jsd.registry.engine import read_only, writes_first
from jsd.registry.errors import RegistryError
from jsd.registry.ratelimits import count_failures, failure_counts
from jsd.registry.tables import accounts, api_keys, console_jobs, console_sessions, console_users

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")  # a record class below

__all__ = ["ConsoleStore", "JobRecord", "SessionRecord", "UserExists", "UserRecord"]


class UserExists(RegistryError):
    """A console user of that name exists already (names are unique across accounts)."""


@dataclass(frozen=True)
class UserRecord:
    id: str
    account: str
    account_kind: str
    username: str
    password_hash: str
    created_at: datetime


@dataclass(frozen=True)
class SessionRecord:
    """A live session: who it is (a user, or an API key for integrators) and its CSRF token."""

    id_hash: str
    account: str
    account_kind: str
    user_id: str | None
    key_id: str | None
    key_scopes: tuple[str, ...] | None
    label: str
    csrf: str
    expires_at: datetime


@dataclass(frozen=True)
class JobRecord:
    id: str
    account: str
    session_hash: str
    state: str
    total: int
    done: int
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, Any]
    has_result: bool


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class ConsoleStore:
    """SQL of the console on the registry's engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._writer = writes_first(engine)
        self._reader = read_only(engine)

    # -- users --------------------------------------------------------------------------------------

    async def add_user(self, user_id: str, account: str, username: str, password_hash: str) -> None:
        try:
            async with self._writer.begin() as conn:
                await conn.execute(
                    insert(console_users),
                    {"id": user_id, "account": account, "username": username, "password_hash": password_hash},
                )
        except IntegrityError:
            raise UserExists(username) from None

    async def user_by_name(self, username: str) -> UserRecord | None:
        statement = (
            select(*console_users.c, accounts.c.kind)
            .select_from(console_users.join(accounts, accounts.c.id == console_users.c.account))
            .where(console_users.c.username == username)
        )
        async with self._reader.connect() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else _user(row)

    async def list_users(self, account: str | None) -> list[UserRecord]:
        statement = (
            select(*console_users.c, accounts.c.kind)
            .select_from(console_users.join(accounts, accounts.c.id == console_users.c.account))
            .order_by(console_users.c.account, console_users.c.username)
        )
        if account is not None:
            statement = statement.where(console_users.c.account == account)
        async with self._reader.connect() as conn:
            return [_user(r) for r in await conn.execute(statement)]

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(
                update(console_users).where(console_users.c.id == user_id).values(password_hash=password_hash)
            )

    async def delete_user(self, user_id: str) -> bool:
        async with self._writer.begin() as conn:
            await conn.execute(delete(console_sessions).where(console_sessions.c.user_id == user_id))
            return bool((await conn.execute(delete(console_users).where(console_users.c.id == user_id))).rowcount)

    # -- sessions -----------------------------------------------------------------------------------

    async def create_session(
        self,
        id_hash: str,
        account: str,
        user_id: str | None,
        key_id: str | None,
        label: str,
        csrf: str,
        expires_at: datetime,
    ) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(delete(console_sessions).where(console_sessions.c.expires_at < datetime.now(UTC)))
            await conn.execute(
                insert(console_sessions),
                {
                    "id_hash": id_hash,
                    "account": account,
                    "user_id": user_id,
                    "key_id": key_id,
                    "label": label[:128],
                    "csrf": csrf,
                    "expires_at": expires_at,
                },
            )

    async def session(self, id_hash: str) -> SessionRecord | None:
        """The session if it has not expired, and its API key (if any) is not revoked."""
        statement = (
            select(*console_sessions.c, accounts.c.kind, api_keys.c.scopes, api_keys.c.revoked_at)
            .select_from(
                console_sessions.join(accounts, accounts.c.id == console_sessions.c.account).outerjoin(
                    api_keys, api_keys.c.key_id == console_sessions.c.key_id
                )
            )
            .where(console_sessions.c.id_hash == id_hash)
        )
        async with self._reader.connect() as conn:
            row = (await conn.execute(statement)).first()
        if row is None or _utc(row.expires_at) <= datetime.now(UTC):
            return None
        if row.key_id is not None and (row.scopes is None or row.revoked_at is not None):
            return None
        scopes = None if row.key_id is None else tuple(str(row.scopes).split())
        return _from_row(SessionRecord, row, account_kind=row.kind, key_scopes=scopes, expires_at=_utc(row.expires_at))

    async def delete_session(self, id_hash: str) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(delete(console_sessions).where(console_sessions.c.id_hash == id_hash))

    # -- sign-in failure counters (shared by all workers through the database) ----------------------

    async def failures(self, buckets: Sequence[str], window_start: int) -> dict[str, int]:
        return await failure_counts(self._reader, buckets, window_start)

    async def count_failure(self, buckets: Sequence[str], window_start: int) -> None:
        await count_failures(self._writer, dict.fromkeys(buckets, 1), window_start)

    # -- device uploads -----------------------------------------------------------------------------

    async def create_job(self, job_id: str, account: str, session_hash: str, total: int) -> None:
        """A new upload; uploads older than a day (and any result they still hold) are deleted meanwhile."""
        async with self._writer.begin() as conn:
            await conn.execute(
                delete(console_jobs).where(console_jobs.c.started_at < datetime.now(UTC) - timedelta(days=1))
            )
            await conn.execute(
                insert(console_jobs),
                {
                    "id": job_id,
                    "account": account,
                    "session_hash": session_hash,
                    "state": "running",
                    "total": total,
                    "done": 0,
                    "summary": "{}",
                    "started_at": datetime.now(UTC),  # to the microsecond, for the rate shown while it runs
                },
            )

    async def job_progress(self, job_id: str, done: int) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(update(console_jobs).where(console_jobs.c.id == job_id).values(done=done))

    async def finish_job(self, job_id: str, state: str, summary: dict[str, Any], result: bytes | None) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(
                update(console_jobs)
                .where(console_jobs.c.id == job_id)
                .values(
                    state=state,
                    summary=json.dumps(summary),
                    result=result,
                    finished_at=datetime.now(UTC),
                )
            )

    async def job(self, job_id: str) -> JobRecord | None:
        columns = [c for c in console_jobs.c if c.name != "result"]
        statement = select(*columns, console_jobs.c.result.is_not(None).label("has_result")).where(
            console_jobs.c.id == job_id
        )
        async with self._reader.connect() as conn:
            row = (await conn.execute(statement)).first()
        if row is None:
            return None
        return _from_row(
            JobRecord, row, started_at=_utc(row.started_at), summary=json.loads(row.summary),
            finished_at=None if row.finished_at is None else _utc(row.finished_at), has_result=bool(row.has_result),
        )  # fmt: skip

    async def peek_result(self, job_id: str) -> bytes | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(console_jobs.c.result).where(console_jobs.c.id == job_id))).first()
        return None if row is None or row.result is None else bytes(row.result)

    async def take_result(self, job_id: str) -> bytes | None:
        """The stored (encrypted) result, deleted in the same transaction: it can be taken only once."""
        async with self._writer.begin() as conn:
            # The UPDATE first: it takes the write lock, so two concurrent downloads cannot both read it.
            await conn.execute(update(console_jobs).where(console_jobs.c.id == job_id).values(done=console_jobs.c.done))
            row = (await conn.execute(select(console_jobs.c.result).where(console_jobs.c.id == job_id))).first()
            if row is None or row.result is None:
                return None
            await conn.execute(update(console_jobs).where(console_jobs.c.id == job_id).values(result=None))
            return bytes(row.result)


def _user(row: Any) -> UserRecord:
    return _from_row(UserRecord, row, account_kind=row.kind, created_at=_utc(row.created_at))


def _from_row(record: type[R], row: Any, **computed: Any) -> R:
    """A record from a result row: the fields in `computed` as given, every other one from its column's name."""
    return record(**{f.name: computed[f.name] if f.name in computed else getattr(row, f.name) for f in fields(record)})
