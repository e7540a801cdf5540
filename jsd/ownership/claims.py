"""Claims and owner tokens: an account takes an unclaimed device with the token of its label, gives it up
(release, with a fresh token), or its manufacturer replaces a lost token.

A token works once: a claim spends it, and a replaced token is spent too. Failed claims are counted per
account, per source address and per device, so guessing tokens costs the guesser, not the device's owner.
"""

from __future__ import annotations

import hmac
import re
import time

from jsd import metrics
from jsd.hsm import Hsm
from jsd.lorawan.tr005 import QrCodeError, parse_qr
from jsd.ownership.model import AccountKind, ClaimFailed, Conflict, DeviceView, Forbidden, Principal, RateLimited
from jsd.ownership.rules import (
    DUMMY_HASH,
    DeviceAccess,
    OwnershipPolicy,
    audit,
    invalid,
    need,
    new_owner_token,
    token_hash,
    view,
)
from jsd.registry.claims import ClaimStore
from jsd.registry.devices import DeviceStore
from jsd.registry.journal import new_event

__all__ = ["ClaimService"]

_TOKEN = re.compile(r"[0-9A-Fa-f]{1,64}")


class ClaimService:
    """Who owns a device, decided by its owner token."""

    def __init__(self, devices: DeviceStore, store: ClaimStore, hsm: Hsm, policy: OwnershipPolicy) -> None:
        self._devices = DeviceAccess(devices)
        self._store = store
        self._hsm = hsm
        self._policy = policy

    async def claim_qr(self, p: Principal, qr: str, *, retry: bool = False) -> DeviceView:
        """A claim with the TR005 string of the label; its JoinEUI must match the device's."""
        try:
            parsed = parse_qr(qr) if isinstance(qr, str) else None
        except QrCodeError as exc:
            raise invalid("qr", str(exc)) from None
        if parsed is None or parsed.owner_token is None:
            raise invalid("qr", "a TR005 string with an owner token (O extension)")
        return await self.claim(p, parsed.dev_eui, parsed.owner_token, join_eui=parsed.join_eui, retry=retry)

    async def claim(
        self, p: Principal, dev_eui: bytes, owner_token: str, *, join_eui: bytes | None = None, retry: bool = False
    ) -> DeviceView:
        """Take an unclaimed device with its owner token; works once, and the token never works again.

        `retry` (an idempotent command repeated after its reply was lost): a claim that already succeeded for
        this account with this token answers with the device instead of failing.
        """
        need(p, "claim")
        if not isinstance(owner_token, str) or not _TOKEN.fullmatch(owner_token.strip()):
            raise invalid("owner_token", "hex digits (32 for a random token, 20 for TKM info)")
        eui = dev_eui.hex()
        window = int(time.time()) // self._policy.claim_window
        limits = self._claimant_limits(p)
        device_bucket = f"claim:device:{eui}"
        counts = await self._store.failures([*limits, device_bucket], window)
        if any(counts.get(bucket, 0) >= limit for bucket, limit in limits.items()):
            wait = self._policy.claim_window - int(time.time()) % self._policy.claim_window
            metrics.CLAIMS.labels("rate_limited").inc()
            raise RateLimited("too many failed claims; try later", retry_after=wait)
        device = await self._devices.store.device(eui)
        presented = token_hash(owner_token)
        stored = device.owner_token_hash if device is not None and device.owner_token_hash else DUMMY_HASH
        matches = hmac.compare_digest(presented, stored)
        if matches and device is not None and (join_eui is None or join_eui.hex() == device.join_eui):
            claimed = await self._store.claim(
                eui,
                presented,
                p.account,
                audit(p, "device.claimed", eui, p.account),
                [new_event("device.claimed", p.account, eui, {"join_eui": device.join_eui})],
            )
            if claimed:
                metrics.CLAIMS.labels("claimed").inc()
                return await self._devices.shown(p, dev_eui)
        if (
            retry
            and device is not None
            and device.owner_account == p.account
            and (join_eui is None or join_eui.hex() == device.join_eui)
            and await self._store.token_spent(presented)
        ):
            return view(p, device)  # a retried claim that already succeeded: the caller owns it already
        reason = "unknown device, or the owner token is not valid for it"
        account_bucket = f"claim:account:{p.account}"
        increments = dict.fromkeys([*limits, device_bucket], 1)
        if counts.get(device_bucket, 0) >= self._policy.claim_failures_per_device:
            # A device under attack: each further wrong token costs the claimant its whole allowance.
            increments[account_bucket] = max(1, limits[account_bucket] - counts.get(account_bucket, 0))
        await self._store.count_failure(
            increments,
            window,
            audit(p, "device.claim_failed", eui),
            [new_event("claim.failed", p.account, eui, {"reason": reason})],
        )
        metrics.CLAIMS.labels("failed").inc()
        raise ClaimFailed(reason)

    def _claimant_limits(self, p: Principal) -> dict[str, int]:
        """The failure buckets of whoever claims: the account, and for REST its source address too.

        The device's own counter never refuses a claim: a stranger's wrong tokens must not lock the owner out.
        """
        limits = {f"claim:account:{p.account}": self._policy.claim_failures_per_account}
        if p.source.startswith("http ") and self._policy.claim_failures_per_source > 0:
            limits[f"claim:source:{p.source[5:][:80]}"] = self._policy.claim_failures_per_source
        return limits

    async def release(self, p: Principal, dev_eui: bytes) -> tuple[DeviceView, str]:
        """Give a device up: a fresh owner token (returned once) lets it be claimed again; its NS and ASTK go."""
        device = await self._devices.owned(p, dev_eui)
        token = await new_owner_token(self._hsm)
        values = {
            "owner_account": None,
            "owner_token_hash": token_hash(token),
            "claimed_at": None,
            "home_net_id": None,
            "astk_label": None,
        }
        await self._devices.change(p, device, values, "device.released", {})
        return view(p, await self._devices.fetch(dev_eui), force=True), token

    async def reissue_owner_token(self, p: Principal, dev_eui: bytes) -> tuple[DeviceView, str]:
        """A new owner token for an unclaimed device (lost label or import answer); the old one dies."""
        need(p, "devices:write")
        device = await self._devices.visible(p, dev_eui)
        if p.kind is AccountKind.SUBSCRIBER:
            raise Forbidden("only the manufacturer or an operator reissues owner tokens")
        if device.owner_account is not None or device.owner_token_hash is None:
            raise Conflict(f"device {dev_eui.hex()} is claimed: its owner releases it instead")
        token = await new_owner_token(self._hsm)
        replaced = await self._store.replace_token(
            device.dev_eui,
            device.owner_token_hash,
            token_hash(token),
            audit(p, "device.owner_token_reissued", device.dev_eui),
        )
        if not replaced:
            raise Conflict(f"device {dev_eui.hex()} changed meanwhile; try again")
        return await self._devices.shown(p, dev_eui), token
