"""Every error under /api/v1 is an RFC 7807 problem, aiohttp's own included; the LBI routes keep theirs."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import aiohttp
import pytest


async def test_router_errors_are_problems(api: Any) -> None:
    for path in ("/nothing-here", "", "/devices/0102030405060708/nothing"):
        reply = await api.call("GET", path, api.operator)
        assert (reply.status, reply.problem) == (404, "not-found"), path
    for method, path in (("PATCH", "/me"), ("DELETE", "/accounts"), ("PUT", "/claims"), ("HEAD", "/me")):
        reply = await api.call(method, path, api.operator)
        assert reply.status == 405, (method, path)
        if method != "HEAD":
            assert reply.problem == "method-not-allowed"
        assert method not in reply.headers["Allow"] and reply.headers["Allow"]


async def test_malformed_json_and_wrong_shapes_are_invalid_requests(api: Any) -> None:
    before = await api.snapshot()
    for raw in (b"{", b"[]", b'"text"', b"\xff\xfe", b'{"id": "x", "kind": "subscriber", "extra": 1}'):
        reply = await api.call(
            "POST", "/accounts", api.operator, data=raw, headers={"Content-Type": "application/json"}
        )
        assert (reply.status, reply.problem) == (400, "invalid-request"), raw
        assert isinstance(reply.body["errors"], list) and reply.body["errors"]
    assert await api.snapshot() == before


async def test_every_unauthenticated_call_gets_the_same_answer(api: Any) -> None:
    alice = await api.account("alice", "subscriber")
    key_id = (await api.ok("GET", "/me", alice))["key_id"]
    spare = (await api.ok("POST", "/accounts/alice/keys", alice, {}))["key"]
    assert (await api.call("DELETE", f"/keys/{key_id}", spare)).status == 204
    groups: dict[str, set[Any]] = {"no key": set(), "a key": set()}
    for group, header in (
        ("no key", None), ("no key", "Basic YWxpY2U6eA=="), ("no key", "Bearer"), ("no key", "Bearer  "),
        ("a key", "Bearer hello"), ("a key", f"Bearer {alice}"), ("a key", f"Bearer {alice[:-1]}A"),
        ("a key", f"Bearer jsd_{key_id}_{'A' * 43}"), ("a key", f"bearer {spare[:-2]}"),
    ):  # fmt: skip
        reply = await api.call("GET", "/me", None, headers={"Authorization": header} if header else None)
        assert (reply.status, reply.problem) == (401, "unauthenticated"), header
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        groups[group].add(reply.comparable())
    assert [len(answers) for answers in groups.values()] == [1, 1], "a revoked key must fail like an unknown one"
    assert (await api.ok("GET", "/me", spare))["account"] == "alice"


async def test_openapi_is_served_without_a_key(api: Any) -> None:
    reply = await api.call("GET", "/openapi.json")
    assert reply.status == 200 and reply.body["openapi"] == "3.1.0"


async def test_lbi_routes_keep_their_own_errors(api: Any) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.post(api.server.url, data=b"not json", headers={"Content-Type": "application/json"}) as response:
            assert (response.status, response.content_type) == (400, "application/json")
            assert (await response.json())["Result"]["ResultCode"] == "MalformedRequest"
        async with client.get(api.server.url + "api/elsewhere") as response:
            assert response.status == 404 and response.content_type != "application/problem+json"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_bug_answers_500_with_a_request_id_only(api: Any, caplog: pytest.LogCaptureFixture) -> None:
    alice = await api.account("alice", "subscriber")
    await api.ok("POST", "/astks", alice, {"name": "as1", "key": "00112233445566778899aabbccddeeff"})
    path = api.server.database.url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE astks RENAME TO astks_gone")
    with caplog.at_level(logging.INFO, logger="jsd.api"):
        reply = await api.call("GET", "/astks", alice)
    assert (reply.status, reply.problem) == (500, "internal")
    request_id = reply.body["detail"].removeprefix("request id ")
    assert reply.body["detail"] == f"request id {request_id}" and "astks" not in reply.raw.decode()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "jsd.api"]
    assert len(errors) == 1 and getattr(errors[0], "request_id", None) == request_id
    logged = errors[0].getMessage()
    assert "OperationalError" in logged and "no such table" not in logged and "00112233" not in logged
