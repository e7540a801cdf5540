"""Why a join, rejoin or key request is refused, in the join layer's own words; ``jsd.lbi.results`` maps them.

Every use case returns either its answer or a `Refusal`. Inside the use cases the step that refuses raises
`Refused`, and the public method turns it into the returned value (recording it first for joins and
rejoins), so no transport needs to catch anything of ours.

A description is safe to send to the NS and to log: it never contains key material, and it never names
HSM internals (labels, groups, PKCS#11 codes): those go into ``detail``, which is only logged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class Reason(enum.Enum):
    """What went wrong, as the join layer sees it."""

    MALFORMED = "malformed"
    """the PHYPayload or a field does not parse, or contradicts the message"""
    UNKNOWN_DEVICE = "unknown-device"
    """no such DevEUI (or not for this JoinEUI), or unknown SessionKeyID"""
    JOIN_EUI_NOT_SERVED = "join-eui-not-served"
    """the JoinEUI (or the ReceiverID naming it) is not served here"""
    NOT_HOME_NETWORK = "not-home-network"
    """the asking NS is not the device's home NS (or the device has none)"""
    WRONG_MIC = "wrong-mic"
    """the request MIC does not verify under the device's key"""
    NONCE_REPLAYED = "nonce-replayed"
    """DevNonce/RJcount reused or not increasing (the MIC was right)"""
    JOIN_NONCE_EXHAUSTED = "join-nonce-exhausted"
    """the 24-bit JoinNonce counter is used up"""
    NO_APPLICATION_KEY = "no-application-key"
    """AppSKeyReq for a device without an ASTK"""
    FAILED = "failed"
    """the HSM or a KEK is unavailable or failed, or the nonce race was lost too often"""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A use case's refusal: ``description`` is for the NS, ``detail`` only for the log."""

    reason: Reason
    description: str
    detail: str | None = None


RefusalName = Callable[[Refusal], str]
"""How the asking protocol names a refusal: the name a `join.rejected` event carries as its ``result``."""


class Refused(Exception):
    """Raised by the step that refuses; the use case returns its `refusal`."""

    def __init__(self, reason: Reason, description: str, detail: str | None = None) -> None:
        super().__init__(description)
        self.refusal = Refusal(reason, description, detail)

    @property
    def reason(self) -> Reason:
        return self.refusal.reason
