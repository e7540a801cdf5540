"""Console sessions and users on SQLite and PostgreSQL: hashed ids, expiry, revoked keys, no clear secrets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jsd.app import CONSOLE_STORE
from jsd.ownership import RateLimited
from jsd.ui.auth import SignInFailed, session_hash
from jsd.ui.site import CONSOLE

from .conftest import LOCAL, PASSWORD


async def test_sessions_expire_end_with_their_key_and_store_no_secret(console: Any) -> None:
    auth = console.server.app[CONSOLE].auth
    store = console.server.app[CONSOLE_STORE]
    key = await console.account("kim-co", "subscriber")
    await console.user("kim-co", "kim")

    session_id, record = await auth.sign_in("KIM", PASSWORD, "192.0.2.1")
    assert record.account == "kim-co" and record.id_hash == session_hash(session_id) != session_id
    assert (await auth.session(session_id)) is not None
    user = await store.user_by_name("kim")
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    p = auth.principal(record, "192.0.2.1")
    assert p.account == "kim-co" and "claim" in p.scopes and "admin" not in p.scopes

    # an expired session is no session
    past = datetime.now(UTC) - timedelta(seconds=1)
    await store.create_session(session_hash("old"), "kim-co", user.id, None, "kim", "x" * 43, past)
    assert await auth.session("old") is None

    # a session opened with an API key ends when the key is revoked
    key_session, key_record = await auth.sign_in_with_key(key, "192.0.2.1")
    assert key_record.key_id is not None and await auth.session(key_session) is not None
    await console.service.accounts.revoke_api_key(LOCAL, key_record.key_id)
    assert await auth.session(key_session) is None

    await auth.sign_out(session_id)
    assert await auth.session(session_id) is None


async def test_sign_in_limits_per_user_and_per_address(console: Any) -> None:
    auth = console.server.app[CONSOLE].auth
    await console.account("lee-co", "subscriber")
    await console.user("lee-co", "lee")
    await console.user("lee-co", "lee2")
    for _ in range(5):
        with pytest.raises(SignInFailed):
            await auth.sign_in("lee", "wrong password", "198.51.100.7")
    with pytest.raises(RateLimited):
        await auth.sign_in("lee", PASSWORD, "198.51.100.8")  # the user is locked, from any address
    await auth.sign_in("lee2", PASSWORD, "198.51.100.7")  # another user from the same address is not
    for i in range(20):
        with pytest.raises((SignInFailed, RateLimited)):
            await auth.sign_in(f"nobody{i}", "wrong password", "203.0.113.9")
    with pytest.raises(RateLimited):
        await auth.sign_in("lee2", PASSWORD, "203.0.113.9")  # the address is locked, for every user
