"""The REST API through real HTTP: an aiohttp client against the running daemon (`jsd_server`).

Every answer with status >= 400 is checked to be an RFC 7807 problem on the way in, so each test that
provokes an error also checks the error's form. The first operator is made the way `jsd accounts create`
does it on the daemon's machine: the service called directly as the local operator.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from jsd.app import OWNERSHIP
from jsd.ownership import SCOPES, AccountKind, Principal

PROBLEM_MEMBERS = {"type", "title", "status", "detail"}
UNSET: Any = object()


@dataclass
class Reply:
    """One HTTP answer: status, headers, and the body parsed by its content type."""

    status: int
    headers: Mapping[str, str]
    content_type: str
    body: Any
    raw: bytes

    @property
    def problem(self) -> str | None:
        """The problem slug (`not-found`, ...) of an error answer, None for a success."""
        if self.status < 400:
            return None
        return str(self.body["type"]).removeprefix("urn:jsd:problem:")

    def comparable(self, *identifiers: str) -> tuple[int, str, Any, Any]:
        """The answer with the given identifiers blanked: for "indistinguishable from nonexistent" checks."""
        text = self.raw.decode()
        for ident in identifiers:
            text = text.replace(ident, "<id>").replace(ident.upper(), "<id>")
        return self.status, self.content_type, self.headers.get("Retry-After"), text


@dataclass
class Api:
    """A client of /api/v1 with the operator's key and shortcuts the stories share."""

    session: aiohttp.ClientSession
    server: Any
    operator: str = ""
    kek_by_label: dict[str, bytes] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.server.url + "api/v1"

    async def call(
        self,
        method: str,
        path: str,
        key: str | None = None,
        json_body: Any = UNSET,
        *,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        kwargs: dict[str, Any] = {"headers": sent}
        if json_body is not UNSET:
            kwargs["json"] = json_body
        elif data is not None:
            kwargs["data"] = data
        async with self.session.request(method, self.base + path, **kwargs) as response:
            raw = await response.read()
            content_type = response.content_type
            body: Any = None
            if method == "HEAD":
                body = None
            elif content_type in ("application/json", "application/problem+json"):
                body = json.loads(raw)
            elif content_type == "application/x-ndjson":
                body = [json.loads(line) for line in raw.decode().splitlines()]
            reply = Reply(response.status, dict(response.headers), content_type, body, raw)
        if reply.status >= 400 and method != "HEAD":
            assert content_type == "application/problem+json", (reply.status, raw[:200])
            assert PROBLEM_MEMBERS <= set(body), body
            assert body["status"] == reply.status and body["type"].startswith("urn:jsd:problem:"), body
            assert isinstance(body["title"], str) and isinstance(body["detail"], str)
        return reply

    async def ok(self, method: str, path: str, key: str | None, json_body: Any = UNSET, **kw: Any) -> Any:
        """Call and insist on a 2xx; the parsed body."""
        reply = await self.call(method, path, key, json_body, **kw)
        assert reply.status < 300, (method, path, reply.status, reply.body)
        return reply.body

    async def account(self, account_id: str, kind: str) -> str:
        """A new account made by the operator over the API; its first API key."""
        body = await self.ok("POST", "/accounts", self.operator, {"id": account_id, "kind": kind})
        return str(body["api_key"]["key"])

    async def network_server(self, net_id: str) -> tuple[str, bytes, str]:
        """An NS registered over the API with a fresh KEK and a generated token: (token, kek, kek_label)."""
        kek = secrets.token_bytes(16)
        label = f"ns-{net_id}-{secrets.token_hex(4)}"
        body = await self.ok(
            "POST",
            "/network-servers",
            self.operator,
            {"net_id": net_id, "name": f"NS {net_id}", "kek_label": label, "kek": kek.hex(), "generate_token": True},
        )
        self.kek_by_label[label] = kek
        return str(body["token"]), kek, label

    async def snapshot(self, *keys: str) -> dict[str, Any]:
        """What the operator (and the given accounts) can read: compared before/after a refused request."""
        state: dict[str, Any] = {}
        for path in (
            "/accounts",
            "/devices?limit=1000",
            "/network-servers",
            "/roaming-agreements",
            "/events?limit=1000",
        ):
            state[path] = await self.ok("GET", path, self.operator)
        for key in keys:
            me = await self.ok("GET", "/me", key)
            state[f"astks:{me['account']}"] = await self.ok("GET", "/astks", key) if "astk" in me["scopes"] else None
            state[f"keys:{me['account']}"] = await self.ok("GET", f"/accounts/{me['account']}/keys", key)
        return state


@pytest.fixture
async def api(jsd_server: Any) -> AsyncIterator[Api]:
    """A client of the running daemon, with an operator account "admin" created on the daemon's machine."""
    local = Principal("_local", AccountKind.OPERATOR, frozenset(SCOPES), None, "local test")
    _, key = await jsd_server.app[OWNERSHIP].accounts.create_account(local, "admin", "operator", None)
    async with aiohttp.ClientSession() as session:
        yield Api(session, jsd_server, key.key)


def new_eui() -> str:
    return secrets.token_hex(8)


@pytest.fixture
def eui() -> Any:
    """A fresh random EUI per call (fixtures are how tests share helpers under importlib mode)."""
    return new_eui
