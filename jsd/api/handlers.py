"""The /api/v1 handlers: authenticate, map JSON and path to one service call, render the answer.

Nothing here decides who may do what: the ownership service checks scopes and visibility and raises
`OwnershipError`, which the problem middleware renders. `ROUTES` is the one list of (method, path,
handler name); the OpenAPI test compares it with the document.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError

from jsd.api import inputs, render
from jsd.api.inputs import invalid
from jsd.api.openapi import document
from jsd.api.problems import NO_STORE
from jsd.bodies import BODY_TIMEOUT
from jsd.ownership import Ownership
from jsd.ownership.imports import MAX_LINE_BYTES, RawRow, csv_rows, jsonl_rows
from jsd.ownership.model import Principal, Unauthenticated
from jsd.ownership.parse import parse_eui, parse_key, parse_net_id
from jsd.wire import requests as wire

CSV_TYPES = frozenset({"text/csv"})
JSONL_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/json-lines"})
NDJSON = "application/x-ndjson"
READ_CHUNK = 65536

log = logging.getLogger("jsd.api")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, separators=(",", ":")), content_type="application/json")


def _no_content() -> web.Response:
    return web.Response(status=204)


def _page_next(items: list[Any], limit: int, key: Callable[[Any], Any]) -> Any:
    """The cursor of the next page: the last item's key when the page is full, else null."""
    return key(items[-1]) if items and len(items) >= limit else None


async def _lines(content: StreamReader, idle_timeout: float) -> AsyncIterator[bytes]:
    """The body's lines as they arrive, each kept to at most MAX_LINE_BYTES + 1 bytes.

    A client that sends nothing for `idle_timeout` seconds (``server.body_timeout``) gets HTTP 408.

    A longer line is cut there rather than buffered, so memory stays bounded and the row reader still
    reports it, with its line number, as too long; the lines after it are read as usual.
    """
    keep = MAX_LINE_BYTES + 1
    pending = bytearray()
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    chunk = await content.read(READ_CHUNK)
            except TimeoutError:
                raise web.HTTPRequestTimeout(reason="the body stopped arriving") from None
            if not chunk:
                break
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                pending += chunk[start : min(end + 1, start + keep - len(pending))]
                yield bytes(pending)
                pending.clear()
                start = end + 1
            pending += chunk[start : start + max(0, keep - len(pending))]
    except HttpProcessingError as exc:
        raise invalid(None, f"the body could not be read: {type(exc).__name__}") from None
    if pending:
        yield bytes(pending)


class Api:
    """The handlers, bound to the AppKey under which the composition root keeps the service."""

    def __init__(self, service_key: web.AppKey[Ownership], *, join_eui_required: bool = True) -> None:
        """`join_eui_required`: no default JoinEUI is configured (the document then requires one per device)."""
        self._service_key = service_key
        self.join_eui_required = join_eui_required

    def service(self, request: web.Request) -> Ownership:
        return request.config_dict[self._service_key]

    async def principal(self, request: web.Request) -> tuple[Ownership, Principal]:
        """The service and the caller behind the bearer API key; no key at all fails like a wrong one."""
        service = self.service(request)
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("an API key is required (Authorization: Bearer <key>)")
        return service, await service.accounts.authenticate(key.strip(), f"http {request.remote or 'unknown'}")

    # --- the document ---------------------------------------------------------------------------------

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return _json(document(self.join_eui_required))

    # --- accounts and keys ----------------------------------------------------------------------------

    async def me(self, request: web.Request) -> web.StreamResponse:
        _, p = await self.principal(request)
        return _json(render.me(p))

    async def create_account(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        body, _ = await inputs.body(request, wire.AccountIn)
        view, key = await service.accounts.create_account(p, body.id, body.kind, body.name)
        return _json({"account": render.account(view), "api_key": render.new_api_key(key)}, 201)

    async def list_accounts(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        return _json({"accounts": [render.account(a) for a in await service.accounts.list_accounts(p)]})

    async def get_account(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        return _json(render.account(await service.accounts.get_account(p, inputs.path(request, "id"))))

    async def create_api_key(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        body, _ = await inputs.body(request, wire.ApiKeyIn)
        scopes = body.scopes
        key = await service.accounts.create_api_key(p, inputs.path(request, "id"), scopes)
        return _json(render.new_api_key(key), 201)

    async def list_api_keys(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        keys = await service.accounts.list_api_keys(p, inputs.path(request, "id"))
        return _json({"keys": [render.api_key(k) for k in keys]})

    async def revoke_api_key(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        await service.accounts.revoke_api_key(p, inputs.path(request, "key_id"))
        return _no_content()

    # --- devices --------------------------------------------------------------------------------------

    async def add_device(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        _, body = await inputs.body(request, wire.DeviceImport)
        return _json(render.imported_device(await service.devices.add_device(p, body)), 201)

    async def import_devices(self, request: web.Request) -> web.StreamResponse:
        """Streamed both ways: rows are parsed as they arrive; the answer is read back and written a page at a time."""
        service, p = await self.principal(request)
        rows: AsyncIterator[RawRow]
        idle = request.config_dict[BODY_TIMEOUT]
        if request.content_type in CSV_TYPES:
            rows = csv_rows(_lines(request.content, idle))
        elif request.content_type in JSONL_TYPES or not request.body_exists:  # no body: nothing to import
            rows = jsonl_rows(_lines(request.content, idle))
        else:
            raise invalid("Content-Type", "must be text/csv or application/x-ndjson")
        async with service.devices.import_streamed(p, rows, request.headers.get("Import-Id")) as answer:
            response = web.StreamResponse(status=200, headers={"Content-Type": NDJSON, "Cache-Control": NO_STORE})
            await response.prepare(request)
            try:
                async for page in answer.pages():
                    text = "".join(
                        json.dumps(render.imported_device(item), separators=(",", ":")) + "\n" for item in page
                    )
                    await response.write(text.encode())
                summary = {"summary": {"created": answer.created, "unchanged": answer.unchanged}}
                await response.write(json.dumps(summary, separators=(",", ":")).encode() + b"\n")
                await response.write_eof()
            except ConnectionError:
                # The answer has begun, so no problem document can follow; the import itself is committed.
                log.warning("import answer cut off: the client went away (%d devices created)", answer.created)
        return response

    async def import_progress(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        import_id = inputs.path(request, "import_id")
        return _json({"import_id": import_id, "staged": await service.devices.import_progress(p, import_id)})

    async def list_devices(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        query = inputs.query(request, wire.DevicesQuery)
        limit = inputs.limit(query)
        devices = await service.devices.list_devices(p, limit=limit, after=inputs.eui(query.after, "after"))
        return _json(
            {
                "devices": [render.device(d) for d in devices],
                "next": _page_next(devices, limit, lambda d: d.dev_eui.hex()),
            }
        )

    async def _on_device(self, request: web.Request) -> tuple[Ownership, Principal, bytes]:
        """The service, the caller and the path's DevEUI (read once the caller is known)."""
        service, p = await self.principal(request)
        return service, p, inputs.path_eui(request)

    async def get_device(self, request: web.Request) -> web.StreamResponse:
        service, p, dev_eui = await self._on_device(request)
        return _json(render.device(await service.devices.get_device(p, dev_eui)))

    async def get_device_nonces(self, request: web.Request) -> web.StreamResponse:
        service, p, dev_eui = await self._on_device(request)
        return _json(render.nonces(dev_eui, await service.devices.nonce_state(p, dev_eui)))

    async def delete_device(self, request: web.Request) -> web.StreamResponse:
        service, p, dev_eui = await self._on_device(request)
        await service.devices.delete_device(p, dev_eui)
        return _no_content()

    async def claim(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        claim, _ = await inputs.body(request, wire.Claim)
        if isinstance(claim.root, wire.ClaimByQr):
            view = await service.claims.claim_qr(p, claim.root.qr)
        else:
            dev_eui = parse_eui(claim.root.dev_eui)
            view = await service.claims.claim(p, dev_eui, claim.root.owner_token)
        return _json(render.device(view))

    async def set_net_id(self, request: web.Request) -> web.StreamResponse:
        service, p, dev_eui = await self._on_device(request)
        body, _ = await inputs.body(request, wire.NetIdChoice)
        net_id = inputs.net_id(body.net_id, "net_id")
        answer = render.device(await service.devices.set_net_id(p, dev_eui, net_id))
        warnings = await service.networks.net_id_warnings(net_id)
        return _json(answer | ({"warnings": warnings} if warnings else {}))

    async def set_astk(self, request: web.Request) -> web.StreamResponse:
        service, p, dev_eui = await self._on_device(request)
        body, _ = await inputs.body(request, wire.AstkChoice)
        return _json(render.device(await service.devices.set_astk(p, dev_eui, body.astk)))

    async def _device_action(self, request: web.Request) -> tuple[Ownership, Principal, bytes]:
        """The service, the caller and the path's DevEUI, for an action on a device that takes no body."""
        service, p, dev_eui = await self._on_device(request)
        await inputs.body(request, wire.Empty)
        return service, p, dev_eui

    async def release(self, request: web.Request) -> web.StreamResponse:
        service, p, dev_eui = await self._device_action(request)
        view, token = await service.claims.release(p, dev_eui)
        return _json(render.released(view, token))

    async def reissue_owner_token(self, request: web.Request) -> web.StreamResponse:
        service, p, dev_eui = await self._device_action(request)
        view, token = await service.claims.reissue_owner_token(p, dev_eui)
        return _json(render.released(view, token))

    async def reset_nonces(self, request: web.Request) -> web.StreamResponse:
        service, p, dev_eui = await self._device_action(request)
        return _json(render.device(await service.devices.reset_nonces(p, dev_eui)))

    # --- ASTKs ----------------------------------------------------------------------------------------

    async def create_astk(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        body, _ = await inputs.body(request, wire.AstkIn)
        name, key = body.name, body.key
        return _json(
            render.astk(await service.astks.create_astk(p, name, None if key is None else parse_key(key, "key"))), 201
        )

    async def list_astks(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        return _json({"astks": [render.astk(a) for a in await service.astks.list_astks(p)]})

    async def export_astk(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        await inputs.body(request, wire.Empty)
        name = inputs.path(request, "name")
        return _json({"name": name, "key": (await service.astks.export_astk(p, name)).hex()})

    # --- network servers and roaming ------------------------------------------------------------------

    async def add_network_server(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        _, body = await inputs.body(request, wire.NetworkServerIn)
        view, token = await service.networks.add_network_server(p, body)
        answer: dict[str, Any] = {"network_server": render.network_server(view)}
        if token is not None:
            answer["token"] = token
        return _json(answer, 201)

    async def list_network_servers(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        servers = await service.networks.list_network_servers(p)
        return _json({"network_servers": [render.network_server(s) for s in servers]})

    async def get_network_server(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        view = await service.networks.get_network_server(p, inputs.path_net_id(request))
        return _json(render.network_server(view))

    async def remove_network_server(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        await service.networks.remove_network_server(p, inputs.path_net_id(request))
        return _no_content()

    async def add_roaming(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        body, _ = await inputs.body(request, wire.RoamingAgreementIn)
        home = parse_net_id(body.home_net_id, "home_net_id")
        visited = parse_net_id(body.visited_net_id, "visited_net_id")
        await service.networks.add_roaming(p, home, visited)
        return _json(render.roaming(home, visited), 201)

    async def list_roaming(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        pairs = await service.networks.list_roaming(p)
        return _json({"roaming_agreements": [render.roaming(h, v) for h, v in pairs]})

    async def remove_roaming(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        home = inputs.path_net_id(request, "home_net_id")
        visited = inputs.path_net_id(request, "visited_net_id")
        await service.networks.remove_roaming(p, home, visited)
        return _no_content()

    # --- audit and events -----------------------------------------------------------------------------

    async def audit(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        query = inputs.query(request, wire.AuditQuery)
        limit = inputs.limit(query)
        entries = await service.journal.audit(
            p, dev_eui=inputs.eui(query.dev_eui, "dev_eui"), after=query.after, limit=limit
        )
        return _json(
            {"entries": [render.audit_entry(e) for e in entries], "next": _page_next(entries, limit, lambda e: e.id)}
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        service, p = await self.principal(request)
        query = inputs.query(request, wire.EventsQuery)
        limit = inputs.limit(query)
        found = await service.journal.events(
            p,
            after=query.after,
            limit=limit,
            dev_eui=inputs.eui(query.dev_eui, "dev_eui"),
            type=query.type,
        )
        return _json({"events": [render.event(e) for e in found], "next": _page_next(found, limit, lambda e: e.seq)})


# (method, path under /api/v1, Api method name); more specific paths first (aiohttp matches in order).
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/openapi.json", "openapi"),
    ("GET", "/me", "me"),
    ("POST", "/accounts", "create_account"),
    ("GET", "/accounts", "list_accounts"),
    ("GET", "/accounts/{id}", "get_account"),
    ("POST", "/accounts/{id}/keys", "create_api_key"),
    ("GET", "/accounts/{id}/keys", "list_api_keys"),
    ("DELETE", "/keys/{key_id}", "revoke_api_key"),
    ("POST", "/devices/import", "import_devices"),
    ("GET", "/devices/import/{import_id}", "import_progress"),
    ("POST", "/devices", "add_device"),
    ("GET", "/devices", "list_devices"),
    ("GET", "/devices/{dev_eui}", "get_device"),
    ("DELETE", "/devices/{dev_eui}", "delete_device"),
    ("GET", "/devices/{dev_eui}/nonces", "get_device_nonces"),
    ("PUT", "/devices/{dev_eui}/net-id", "set_net_id"),
    ("PUT", "/devices/{dev_eui}/astk", "set_astk"),
    ("POST", "/devices/{dev_eui}/release", "release"),
    ("POST", "/devices/{dev_eui}/owner-token", "reissue_owner_token"),
    ("POST", "/devices/{dev_eui}/reset-nonces", "reset_nonces"),
    ("POST", "/claims", "claim"),
    ("POST", "/astks", "create_astk"),
    ("GET", "/astks", "list_astks"),
    ("POST", "/astks/{name}/export", "export_astk"),
    ("POST", "/network-servers", "add_network_server"),
    ("GET", "/network-servers", "list_network_servers"),
    ("GET", "/network-servers/{net_id}", "get_network_server"),
    ("DELETE", "/network-servers/{net_id}", "remove_network_server"),
    ("POST", "/roaming-agreements", "add_roaming"),
    ("GET", "/roaming-agreements", "list_roaming"),
    ("DELETE", "/roaming-agreements/{home_net_id}/{visited_net_id}", "remove_roaming"),
    ("GET", "/audit", "audit"),
    ("GET", "/events", "events"),
)
