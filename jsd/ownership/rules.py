"""What every ownership service shares: the settings, checks of the caller and of fields, audit entries, who
sees which device, and the HSM's unavailability as a 503.

A device another account owns is reported exactly like a device that does not exist. Secrets (API keys,
owner tokens) are stored as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jsd.hsm import Hsm, HsmUnavailable
from jsd.ownership.model import (
    AccountKind,
    Conflict,
    DeviceView,
    FieldError,
    Forbidden,
    HsmDown,
    InvalidRequest,
    NoSuchResource,
    Principal,
    is_text,
)
from jsd.registry.devices import DeviceStore, OwnedDevice
from jsd.registry.journal import AuditRecord, new_event

__all__ = [
    "DUMMY_HASH",
    "DeviceAccess",
    "OwnershipPolicy",
    "audit",
    "boolean",
    "hsm_guard",
    "invalid",
    "need",
    "new_owner_token",
    "new_owner_tokens",
    "page_limit",
    "plain_text",
    "sees",
    "token_hash",
    "view",
]

log = logging.getLogger("jsd.ownership")

DUMMY_HASH = "0" * 64
"""Compared against when nothing is stored, so a miss costs the same time as a wrong secret."""


@dataclass(frozen=True)
class OwnershipPolicy:
    """Settings of the ownership workflow (section ``[ownership]`` of the configuration)."""

    default_join_eui: bytes | None = None
    default_hsm_group: str = "default"
    claim_failures_per_account: int = 20
    claim_failures_per_source: int = 200
    claim_failures_per_device: int = 5
    claim_window: int = 900
    event_retention: int = 100_000


def token_hash(token: str) -> str:
    """The stored form of an owner token: hex digits are case-folded first, so labels may print uppercase."""
    return hashlib.sha256(b"jsd-owner-token\0" + token.strip().upper().encode()).hexdigest()


@contextlib.contextmanager
def hsm_guard(what: str) -> Iterator[None]:
    """An unavailable token becomes `HsmDown` (503), never a caller's fault."""
    try:
        yield
    except HsmUnavailable:
        log.warning("HSM unavailable during %s", what)
        raise HsmDown("the HSM cannot be used now; try again later") from None


async def new_owner_token(hsm: Hsm) -> str:
    """A fresh random owner token (32 hex digits) from the HSM's generator."""
    with hsm_guard("generate_random"):
        return (await hsm.generate_random(16)).hex().upper()


async def new_owner_tokens(hsm: Hsm, count: int) -> list[str]:
    """`count` fresh owner tokens, 64 per call to the HSM's generator (a bulk import)."""
    tokens: list[str] = []
    with hsm_guard("generate_random"):
        while len(tokens) < count:
            raw = await hsm.generate_random(16 * min(64, count - len(tokens)))
            tokens += [raw[start : start + 16].hex().upper() for start in range(0, len(raw), 16)]
    return tokens


def need(p: Principal, scope: str) -> None:
    if scope not in p.scopes:
        raise Forbidden(f"this API key lacks the {scope!r} scope")


def invalid(field: str | None, reason: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {reason}" if field else reason, errors=[FieldError(field, reason)])


def plain_text(value: object, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or not is_text(value):
        raise invalid(field, f"text of at most {limit} characters, without control or invisible characters")
    return value or None


def boolean(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise invalid(field, "true or false")


def page_limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise invalid("limit", "1..1000")
    return limit


def audit(
    p: Principal,
    action: str,
    dev_eui: str | None = None,
    owner: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """The audit entry of what `p` did; `owner` lets the device's owner read it too."""
    return AuditRecord(
        account=p.account,
        key_id=p.key_id,
        source=p.source,
        action=action,
        dev_eui=dev_eui,
        owner_account=owner,
        details=details or {},
    )


def sees(p: Principal, d: OwnedDevice) -> bool:
    if p.is_operator:
        return True
    if d.owner_account is not None:
        return d.owner_account == p.account
    return p.kind is AccountKind.MANUFACTURER and d.manufacturer == p.account


def view(p: Principal, d: OwnedDevice, *, force: bool = False) -> DeviceView:
    """What `p` may see of a device; `force` shows the owner (a release answers who let it go)."""
    shows_maker = p.is_operator or d.manufacturer == p.account
    shows_owner = p.is_operator or d.owner_account == p.account or force
    return DeviceView(
        dev_eui=bytes.fromhex(d.dev_eui),
        join_eui=bytes.fromhex(d.join_eui),
        mac_version=d.mac_version,
        name=d.name,
        admin_info=d.admin_info,
        secure_element=d.secure_element,
        profile_id=bytes.fromhex(d.profile_id),
        serial=d.serial,
        manufacturer=d.manufacturer if shows_maker else None,
        owner=d.owner_account if shows_owner else None,
        home_net_id=None if d.home_net_id is None else bytes.fromhex(d.home_net_id),
        astk=d.astk_name if d.astk_name is not None else d.astk_label,  # an operator's own label (devices add)
        keys_exported=d.keys_exported,
        created_at=d.created_at,
        claimed_at=d.claimed_at,
    )


class DeviceAccess:
    """A device as one caller may reach it; shared by the device and claim services."""

    def __init__(self, store: DeviceStore) -> None:
        self.store = store

    async def fetch(self, dev_eui: bytes) -> OwnedDevice:
        device = await self.store.device(dev_eui.hex())
        if device is None:
            raise NoSuchResource(f"device {dev_eui.hex()} not found")
        return device

    async def visible(self, p: Principal, dev_eui: bytes) -> OwnedDevice:
        device = await self.store.device(dev_eui.hex())
        if device is None or not sees(p, device):
            raise NoSuchResource(f"device {dev_eui.hex()} not found")
        return device

    async def shown(self, p: Principal, dev_eui: bytes) -> DeviceView:
        """The device as `p` sees it now (after a change)."""
        return view(p, await self.visible(p, dev_eui))

    async def owned(self, p: Principal, dev_eui: bytes) -> OwnedDevice:
        """A claimed device the caller owns (or any claimed device for an operator)."""
        need(p, "devices:write")
        device = await self.visible(p, dev_eui)
        if p.kind is AccountKind.MANUFACTURER:
            raise Forbidden("a manufacturer cannot change a device's network or keys")
        if device.owner_account is None:
            raise Conflict(f"device {dev_eui.hex()} is not claimed")
        return device

    async def change(
        self,
        p: Principal,
        device: OwnedDevice,
        values: Mapping[str, Any],
        event: str,
        data: Mapping[str, Any],
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Change an owned device with its audit entry and event; a concurrent change makes it a conflict."""
        owner = device.owner_account
        changed = await self.store.update_owned(
            device.dev_eui,
            owner,
            values,
            audit(p, event, device.dev_eui, owner, details=details or {}),
            [new_event(event, owner, device.dev_eui, data)],
        )
        if not changed:
            raise Conflict(f"device {device.dev_eui} changed meanwhile; try again")

