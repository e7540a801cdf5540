"""The part of the Join Server's ownership REST API (``docs/api.md``) the bridge uses, as a subscriber.

Errors are RFC 7807 problems; the bridge needs one distinction: ``JsUnavailable`` (the daemon is down, busy
or rate-limiting: try again on the next pass, change nothing) versus ``JsRefused`` (an answer that will not
change by retrying: a wrong token, a device someone else owns).
"""

from __future__ import annotations

from typing import Any

import aiohttp


class JsError(Exception):
    """A failed call; ``problem`` is the RFC 7807 ``type`` URI when the daemon sent one."""

    def __init__(self, message: str, status: int | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem


class JsUnavailable(JsError):
    """Not reachable, 5xx or 429: retry later."""


class JsRefused(JsError):
    """4xx other than 429."""


class JsClient:
    """Calls ``/api/v1`` of one daemon with one API key (``Authorization: Bearer jsd_…``)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/") + "/api/v1"
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"JsClient({self.base_url})"

    async def _request(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        try:
            async with self._session.request(method, self.base_url + path, json=body) as response:
                if missing_ok and response.status == 404:
                    return None
                payload = await response.json(content_type=None) if response.status != 204 else None
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise JsUnavailable(f"{method} {path}: {type(exc).__name__} {exc}".strip()) from None
        if status < 400:
            return payload
        problem = payload if isinstance(payload, dict) else {}
        text = f"{method} {path}: {status} {problem.get('title', '')}: {problem.get('detail', '')}".strip(": ")
        kind = JsUnavailable if status >= 500 or status == 429 else JsRefused
        raise kind(text, status, problem.get("type"))

    async def me(self) -> dict[str, Any]:
        """The account behind the key (``{"account", "kind", "key_id", "scopes"}``)."""
        result: dict[str, Any] = await self._request("GET", "/me")
        return result

    async def devices(self) -> list[dict[str, Any]]:
        """Every device this account sees, all pages."""
        devices: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = await self._request("GET", "/devices?limit=500" + (f"&after={after}" if after else ""))
            devices.extend(page["devices"])
            after = page.get("next")
            if not after:
                return devices

    async def device(self, dev_eui: bytes) -> dict[str, Any] | None:
        """One device, or None when this account cannot see it."""
        result: dict[str, Any] | None = await self._request("GET", f"/devices/{dev_eui.hex()}", missing_ok=True)
        return result

    async def claim(self, dev_eui: bytes, owner_token: str) -> dict[str, Any]:
        """Claim with the owner token the operator put on the NS device; the claimed Device."""
        result: dict[str, Any] = await self._request(
            "POST", "/claims", {"dev_eui": dev_eui.hex(), "owner_token": owner_token}
        )
        return result

    async def claim_qr(self, qr: str) -> dict[str, Any]:
        """Claim with a TR005 string (it carries the DevEUI and the owner token); the claimed Device."""
        result: dict[str, Any] = await self._request("POST", "/claims", {"qr": qr})
        return result

    async def set_net_id(self, dev_eui: bytes, net_id: bytes | None) -> dict[str, Any]:
        """The device's home NetID: the Join Server answers only that network's JoinReqs for it."""
        result: dict[str, Any] = await self._request(
            "PUT", f"/devices/{dev_eui.hex()}/net-id", {"net_id": net_id.hex() if net_id else None}
        )
        return result

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
