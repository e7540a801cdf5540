"""Why a join, rejoin or key request is refused. These know nothing about LBI; ``jsd.lbi.results`` maps them.

    JoinRejected
    ├── MalformedFrame          the PHYPayload or a field does not parse, or contradicts the message
    ├── UnknownDevice           no such DevEUI (or not for this JoinEUI), or unknown SessionKeyID
    ├── UnknownReceiver         the JoinEUI is not served here
    ├── NotHomeNetwork          the asking NS is not the device's home NS (or the device has none)
    ├── MICMismatch             the request MIC is wrong
    ├── NonceReplayed           DevNonce/RJcount reused or not increasing (the MIC was right)
    ├── JoinNonceExhausted      the 24-bit JoinNonce counter is used up
    ├── NoApplicationKey        AppSKeyReq for a device without an ASTK
    └── JoinFailed              the HSM or a KEK is unavailable, or the nonce race was lost too often

Every description is safe to send to the NS and to log: it never contains key material, and it never
names HSM internals (labels, groups, PKCS#11 codes): those go into ``detail``, which is only logged.
"""

from __future__ import annotations


class JoinRejected(Exception):
    """Base class; ``description`` is what the NS reads in ``Result.Description``, ``detail`` is for the log."""

    def __init__(self, description: str, detail: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.detail = detail


class MalformedFrame(JoinRejected):
    pass


class UnknownDevice(JoinRejected):
    pass


class UnknownReceiver(JoinRejected):
    pass


class NotHomeNetwork(JoinRejected):
    pass


class MICMismatch(JoinRejected):
    pass


class NonceReplayed(JoinRejected):
    pass


class JoinNonceExhausted(JoinRejected):
    pass


class NoApplicationKey(JoinRejected):
    pass


class JoinFailed(JoinRejected):
    pass
