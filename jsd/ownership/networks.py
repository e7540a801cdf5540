"""Network servers (the Join Server's Backend Interfaces peers) and roaming agreements between them; operators only."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Any

from jsd.hsm import Hsm, KekExists
from jsd.ownership.model import Conflict, NetworkServerView, NoSuchResource, Principal
from jsd.ownership.parse import parse_hex, parse_key, parse_net_id
from jsd.ownership.rules import audit, boolean, hsm_guard, invalid, need, plain_text
from jsd.registry import NetworkServer, NetworkServerExists, NotFound, Registry
from jsd.registry.journal import AuditRecord, Journal
from jsd.registry.networks import RoamingStore

__all__ = ["NetworkService"]

_NS_FIELDS = {
    "net_id", "name", "kek_label", "kek", "token", "generate_token", "cert_fingerprint", "answer_url", "async_mode",
}  # fmt: skip


class NetworkService:
    """Who may ask the Join Server (NSs with their KEK and credentials) and for whose devices (roaming)."""

    def __init__(self, registry: Registry, roaming: RoamingStore, journal: Journal, hsm: Hsm) -> None:
        self._registry = registry
        self._roaming = roaming
        self._journal = journal
        self._hsm = hsm

    async def add_network_server(
        self, p: Principal, fields: Mapping[str, Any]
    ) -> tuple[NetworkServerView, str | None]:
        """Register an NS (operator): its KEK may be imported here; a bearer token may be generated once."""
        need(p, "admin")
        if not isinstance(fields, Mapping):
            raise invalid(None, "a network server is a JSON object")
        unknown = sorted(set(fields) - _NS_FIELDS)
        if unknown:
            raise invalid(unknown[0], f"unknown field(s): {', '.join(unknown)}")
        net_id = parse_net_id(fields.get("net_id"))
        name = plain_text(fields.get("name"), "name", 255) or net_id.hex()
        kek_label = fields.get("kek_label")
        if not isinstance(kek_label, str) or not kek_label or len(kek_label) > 64 or not kek_label.isprintable():
            raise invalid("kek_label", "1-64 printable characters")
        if kek_label.startswith(("jsd-", "astk-", "lmk-")):
            raise invalid("kek_label", "prefixes jsd-, astk- and lmk- are reserved")
        kek = None if fields.get("kek") in (None, "") else parse_key(fields.get("kek"), "kek")
        token = fields.get("token")
        if token is not None and (not isinstance(token, str) or len(token) < 16 or len(token) > 256):
            raise invalid("token", "16-256 characters")
        generate = boolean(fields.get("generate_token", False), "generate_token")
        if generate and token is not None:
            raise invalid("generate_token", "either give a token or generate one")
        if generate:
            token = secrets.token_urlsafe(32)
        fingerprint = fields.get("cert_fingerprint")
        if fingerprint is not None:
            fingerprint = parse_hex(fingerprint.replace(":", "") if isinstance(fingerprint, str) else fingerprint,
                                    "cert_fingerprint", 32, "a SHA-256 fingerprint").hex()  # fmt: skip
        if token is None and fingerprint is None:
            raise invalid("token", "a bearer token (token / generate_token) or a cert_fingerprint is required")
        answer_url = fields.get("answer_url")
        if answer_url is not None and (
            not isinstance(answer_url, str) or not re.fullmatch(r"https?://\S{1,2000}", answer_url)
        ):
            raise invalid("answer_url", "an http(s) URL")
        async_mode = boolean(fields.get("async_mode", False), "async_mode")
        if async_mode and answer_url is None:
            raise invalid("answer_url", "required with async_mode")
        if await self._registry.get_network_server(net_id) is not None:
            raise Conflict(f"network server {net_id.hex()} exists already")
        await self._kek_ready(kek_label, kek)
        ns = NetworkServer(
            net_id=net_id,
            name=name,
            kek_label=kek_label,
            token_hash=None if token is None else hashlib.sha256(token.encode()).hexdigest(),
            cert_fingerprint=fingerprint,
            answer_url=answer_url,
            async_mode=async_mode,
        )
        try:
            await self._registry.add_network_server(ns)
        except NetworkServerExists:
            raise Conflict(f"network server {net_id.hex()} clashes with a registered NetID, token or cert") from None
        await self._journal.record([audit(p, "network_server.added", details={"net_id": net_id.hex()})])
        return _ns_view(ns), token if generate else None

    async def _kek_ready(self, kek_label: str, kek: bytes | None) -> None:
        """Import the NS's KEK, or check the HSM has one under that label already."""
        try:
            with hsm_guard("import_kek"):
                if kek is not None:
                    await self._hsm.import_kek(kek_label, kek)
                elif not await self._hsm.has_kek(kek_label):
                    raise invalid("kek", f"no KEK {kek_label!r} in the HSM: give its value to import it")
        except KekExists:
            raise Conflict(f"a KEK labelled {kek_label!r} is in the HSM already; omit kek to use it") from None

    async def list_network_servers(self, p: Principal) -> list[NetworkServerView]:
        need(p, "admin")
        return [_ns_view(ns) for ns in await self._registry.list_network_servers()]

    async def network_server_choices(self, p: Principal) -> list[tuple[bytes, str]]:
        """NetIDs and names of the registered NSs, for whoever may set a device's home NetID to pick from."""
        need(p, "devices:write")
        return [(ns.net_id, ns.name) for ns in await self._registry.list_network_servers()]

    async def get_network_server(self, p: Principal, net_id: bytes) -> NetworkServerView:
        need(p, "admin")
        ns = await self._registry.get_network_server(net_id)
        if ns is None:
            raise NoSuchResource(f"network server {net_id.hex()} not found")
        return _ns_view(ns)

    async def remove_network_server(self, p: Principal, net_id: bytes) -> None:
        need(p, "admin")
        try:
            await self._registry.remove_network_server(net_id)
        except NotFound:
            raise NoSuchResource(f"network server {net_id.hex()} not found") from None
        await self._journal.record([audit(p, "network_server.removed", details={"net_id": net_id.hex()})])

    async def add_roaming(self, p: Principal, home_net_id: bytes, visited_net_id: bytes) -> None:
        """Allow the visited NS to ask for (HomeNSReq) devices whose home is `home_net_id`."""
        need(p, "admin")
        if not await self._roaming.add_roaming(*_pair(home_net_id, visited_net_id, p, "roaming.added")):
            raise Conflict("this roaming agreement exists already")

    async def list_roaming(self, p: Principal) -> list[tuple[bytes, bytes]]:
        need(p, "admin")
        return [(bytes.fromhex(h), bytes.fromhex(v)) for h, v in await self._roaming.list_roaming()]

    async def remove_roaming(self, p: Principal, home_net_id: bytes, visited_net_id: bytes) -> None:
        need(p, "admin")
        if not await self._roaming.remove_roaming(*_pair(home_net_id, visited_net_id, p, "roaming.removed")):
            raise NoSuchResource("no such roaming agreement")

    async def net_id_warnings(self, net_id: bytes | None) -> list[str]:
        """Why a home NetID may not work yet: no network server with it is registered (it may be added later)."""
        if net_id is None or await self._registry.get_network_server(net_id) is not None:
            return []
        return [f"no network server with NetID {net_id.hex()} is registered yet: no NS can join the device until one is"]


def _pair(home: bytes, visited: bytes, p: Principal, action: str) -> tuple[str, str, AuditRecord]:
    """A roaming agreement's NetIDs as stored, with the audit entry of the change."""
    return home.hex(), visited.hex(), audit(p, action, details={"home": home.hex(), "visited": visited.hex()})


def _ns_view(ns: NetworkServer) -> NetworkServerView:
    return NetworkServerView(
        ns.net_id, ns.name, ns.kek_label, ns.token_hash is not None, ns.cert_fingerprint, ns.answer_url, ns.async_mode
    )
