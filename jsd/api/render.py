"""The JSON shapes of docs/api.md, from the service's views: lowercase hex, RFC 3339 'Z' times.

Each function builds the shape of one model of jsd/wire/responses.py (the OpenAPI document's schemas); the
schemathesis test holds every answer of the running daemon to them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from jsd.ownership.model import (
    AccountView,
    ApiKeyView,
    AstkView,
    AuditEntry,
    DeviceView,
    EventView,
    ImportedDevice,
    NetworkServerView,
    NewApiKey,
    Principal,
    wire_time,
)


def optional_time(value: datetime | None) -> str | None:
    return None if value is None else wire_time(value)


def optional_hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def me(principal: Principal) -> dict[str, Any]:
    return {
        "account": principal.account,
        "kind": principal.kind.value,
        "key_id": principal.key_id,
        "scopes": sorted(principal.scopes),
    }


def account(view: AccountView) -> dict[str, Any]:
    return {"id": view.id, "kind": str(view.kind), "name": view.name, "created_at": wire_time(view.created_at)}


def new_api_key(key: NewApiKey) -> dict[str, Any]:
    return {"key_id": key.key_id, "key": key.key, "scopes": sorted(key.scopes)}


def api_key(view: ApiKeyView) -> dict[str, Any]:
    return {
        "key_id": view.key_id,
        "account": view.account,
        "scopes": sorted(view.scopes),
        "created_at": wire_time(view.created_at),
        "revoked_at": optional_time(view.revoked_at),
    }


def device(view: DeviceView) -> dict[str, Any]:
    return view.as_dict()


class NonceBook(Protocol):
    """What a nonce state shows (the registry's `NonceState`, without depending on the registry)."""

    @property
    def join_nonce(self) -> int: ...
    @property
    def last_dev_nonce(self) -> int | None: ...
    @property
    def used_dev_nonces(self) -> tuple[int, ...]: ...


def nonces(dev_eui: bytes, state: NonceBook | None) -> dict[str, Any]:
    """A device's nonce state; a device without one (gone since it was looked up) shows none used."""
    if state is None:
        return {"dev_eui": dev_eui.hex(), "join_nonce": 0, "last_dev_nonce": None, "used_dev_nonces": 0}
    return {"dev_eui": dev_eui.hex(), "join_nonce": state.join_nonce, "last_dev_nonce": state.last_dev_nonce,
            "used_dev_nonces": len(state.used_dev_nonces)}  # fmt: skip


def released(view: DeviceView, owner_token: str) -> dict[str, Any]:
    """The answer of a release or a reissued owner token: the device and its new token, shown this once."""
    return {"device": device(view), "owner_token": owner_token}


def imported_device(item: ImportedDevice) -> dict[str, Any]:
    """One import answer line; token and keys appear only when the service handed them out (created)."""
    out: dict[str, Any] = {}
    if item.line is not None:
        out["line"] = item.line
    out.update(
        {
            "dev_eui": item.dev_eui.hex(),
            "join_eui": item.join_eui.hex(),
            "profile_id": item.profile_id.hex(),
            "name": item.name,
            "serial": item.serial,
            "status": "created" if item.created else "unchanged",
        }
    )
    if item.owner_token is not None:
        out["owner_token"] = item.owner_token
    if item.app_key is not None:
        out["app_key"] = item.app_key.hex()
    if item.nwk_key is not None:
        out["nwk_key"] = item.nwk_key.hex()
    return out


def astk(view: AstkView) -> dict[str, Any]:
    return {
        "name": view.name,
        "kek_label": view.kek_label,
        "origin": view.origin,
        "exported": view.exported,
        "created_at": wire_time(view.created_at),
    }


def network_server(view: NetworkServerView) -> dict[str, Any]:
    return {
        "net_id": view.net_id.hex(),
        "name": view.name,
        "kek_label": view.kek_label,
        "has_token": view.has_token,
        "cert_fingerprint": view.cert_fingerprint,
        "answer_url": view.answer_url,
        "async_mode": view.async_mode,
    }


def roaming(home_net_id: bytes, visited_net_id: bytes) -> dict[str, str]:
    return {"home_net_id": home_net_id.hex(), "visited_net_id": visited_net_id.hex()}


def audit_entry(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": wire_time(entry.at),
        "account": entry.account,
        "key_id": entry.key_id,
        "source": entry.source,
        "action": entry.action,
        "dev_eui": optional_hex(entry.dev_eui),
        "details": entry.details,
    }


def event(view: EventView) -> dict[str, Any]:
    return view.as_dict()
