"""People of the web console: users with argon2 password hashes, sessions, and the sign-in rate limit.

A signed-in user acts as a `Principal` of its account with the account kind's default scopes; an integrator
may sign in with an API key instead and then has that key's scopes. Who may do what stays in the ownership
service: this module only says who is calling. Session ids are 256-bit random values stored as SHA-256
digests; failed sign-ins are counted per user name and per source address in the database, so every worker
and instance sees the same counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from jsd.ownership import AccountKind, Ownership, Principal
from jsd.ownership.model import DEFAULT_SCOPES, FieldError, InvalidRequest, OwnershipError, RateLimited
from jsd.registry.console import ConsoleStore, SessionRecord, UserExists, UserRecord

__all__ = ["ConsoleAuth", "SignInFailed", "SignInPolicy", "session_hash"]

USERNAME_RE = r"[a-z0-9][a-z0-9._@-]{2,63}"
_USERNAME = re.compile(USERNAME_RE)
MIN_PASSWORD = 10
MAX_PASSWORD = 1024


class SignInFailed(OwnershipError):
    problem, status, title = "unauthenticated", 401, "Sign-in failed"


@dataclass(frozen=True)
class SignInPolicy:
    """Settings of section ``[console]`` that govern sessions and sign-in."""

    session_lifetime: int = 8 * 3600
    failures_per_user: int = 5
    failures_per_address: int = 20
    window: int = 900


def session_hash(session_id: str) -> str:
    return hashlib.sha256(b"jsd-console-session\0" + session_id.encode()).hexdigest()


def _invalid(field: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {reason}", errors=[FieldError(field, reason)])


class ConsoleAuth:
    """Users, sessions and sign-in; account rules are asked of the ownership service."""

    def __init__(self, store: ConsoleStore, service: Ownership, policy: SignInPolicy) -> None:
        self._store = store
        self._service = service
        self._policy = policy
        self._hasher = PasswordHasher()
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))

    # -- users --------------------------------------------------------------------------------------

    async def create_user(self, p: Principal, account: str, username: str, password: str) -> UserRecord:
        """A user of `account` (its own account, or any for an operator); only the argon2 hash is kept."""
        await self._service.accounts.get_account(p, account)  # NoSuchResource unless the caller may manage that account
        errors = []
        if not isinstance(username, str) or not _USERNAME.fullmatch(username):
            errors.append(FieldError("username", "3-64 characters: lowercase letters, digits and . _ @ -"))
        if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            errors.append(FieldError("password", f"{MIN_PASSWORD} to {MAX_PASSWORD} characters"))
        if errors:
            raise InvalidRequest("; ".join(f"{e.field}: {e.reason}" for e in errors), errors=errors)
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        try:
            await self._store.add_user(secrets.token_hex(16), account, username, password_hash)
        except UserExists:
            raise InvalidRequest(
                "username: taken", errors=[FieldError("username", f"the user name {username!r} is taken")]
            ) from None
        user = await self._store.user_by_name(username)
        assert user is not None
        return user

    async def list_users(self, p: Principal, account: str | None) -> list[UserRecord]:
        if account is None:
            if not p.is_operator:
                account = p.account
        else:
            await self._service.accounts.get_account(p, account)
        return await self._store.list_users(account)

    async def delete_user(self, p: Principal, username: str) -> None:
        user = await self._store.user_by_name(username)
        if user is None or (not p.is_operator and user.account != p.account):
            raise _invalid("username", f"no user {username!r}")
        await self._store.delete_user(user.id)

    # -- sign-in ------------------------------------------------------------------------------------

    async def _check_rate(self, user_bucket: str | None, address_bucket: str) -> int:
        window = int(time.time()) // self._policy.window
        buckets = [address_bucket] + ([user_bucket] if user_bucket else [])
        counts = await self._store.failures(buckets, window)
        if counts.get(address_bucket, 0) >= self._policy.failures_per_address or (
            user_bucket is not None and counts.get(user_bucket, 0) >= self._policy.failures_per_user
        ):
            wait = self._policy.window - int(time.time()) % self._policy.window
            raise RateLimited("too many failed sign-ins; try again later", retry_after=wait)
        return window

    async def sign_in(self, username: str, password: str, address: str) -> tuple[str, SessionRecord]:
        """A new session for a user; unknown names and wrong passwords fail alike (and take as long)."""
        name = username.strip().lower()[:64]
        buckets = [f"signin:user:{name}"[:96], f"signin:addr:{address}"[:96]]
        window = await self._check_rate(buckets[0], buckets[1])
        user = await self._store.user_by_name(name) if _USERNAME.fullmatch(name) else None
        ok = await asyncio.to_thread(self._verify, user.password_hash if user else self._dummy_hash, password)
        if user is None or not ok:
            await self._store.count_failure(buckets, window)
            raise SignInFailed("unknown user name or wrong password")
        if self._hasher.check_needs_rehash(user.password_hash):
            await self._store.set_password_hash(user.id, await asyncio.to_thread(self._hasher.hash, password))
        return await self._new_session(user.account, user.id, None, f"{user.username}")

    async def sign_in_with_key(self, api_key: str, address: str) -> tuple[str, SessionRecord]:
        """A session for an integrator's API key; it ends when the key is revoked."""
        address_bucket = f"signin:addr:{address}"[:96]
        window = await self._check_rate(None, address_bucket)
        try:
            p = await self._service.accounts.authenticate(api_key, f"ui {address}")
        except OwnershipError:
            await self._store.count_failure([address_bucket], window)
            raise SignInFailed("unknown or revoked API key") from None
        return await self._new_session(p.account, None, p.key_id, f"API key {p.key_id}")

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _new_session(
        self, account: str, user_id: str | None, key_id: str | None, label: str
    ) -> tuple[str, SessionRecord]:
        session_id = secrets.token_urlsafe(32)  # 256 bits
        expires = datetime.now(UTC) + timedelta(seconds=self._policy.session_lifetime)
        await self._store.create_session(
            session_hash(session_id), account, user_id, key_id, label, secrets.token_urlsafe(32), expires
        )
        record = await self._store.session(session_hash(session_id))
        assert record is not None
        return session_id, record

    async def session(self, session_id: str) -> SessionRecord | None:
        if not session_id or len(session_id) > 128:
            return None
        return await self._store.session(session_hash(session_id))

    async def sign_out(self, session_id: str) -> None:
        await self._store.delete_session(session_hash(session_id))

    @staticmethod
    def principal(session: SessionRecord, address: str) -> Principal:
        """Who acts for this session; the audit log's source names the console user."""
        kind = AccountKind(session.account_kind)
        scopes = DEFAULT_SCOPES[kind]
        if session.key_scopes is not None:
            scopes = frozenset(session.key_scopes) & scopes
        return Principal(
            account=session.account,
            kind=kind,
            scopes=scopes,
            key_id=session.key_id,
            source=f"ui {session.label} {address}"[:128],
        )
