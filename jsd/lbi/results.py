"""LBI Result codes (TS002-1.0.0 Table 24, exact spelling) and the one table that maps domain errors to them."""

from __future__ import annotations

from jsd import join

SUCCESS = "Success"
MIC_FAILED = "MICFailed"
JOIN_REQ_FAILED = "JoinReqFailed"
ACTIVATION_DISALLOWED = "ActivationDisallowed"
UNKNOWN_DEV_EUI = "UnknownDevEUI"
UNKNOWN_SENDER = "UnknownSender"
UNKNOWN_RECEIVER = "UnkownReceiver"  # sic: the spelling of the specification, as peers expect it
INVALID_PROTOCOL_VERSION = "InvalidProtocolVersion"
MALFORMED_REQUEST = "MalformedRequest"
MALFORMED_MESSAGE = "MalformedMessage"  # protocol 1.1's name for MalformedRequest
OTHER = "Other"

RESULT_FOR: dict[type[join.JoinRejected], str] = {
    join.MalformedFrame: MALFORMED_REQUEST,
    join.UnknownDevice: UNKNOWN_DEV_EUI,
    join.UnknownReceiver: UNKNOWN_RECEIVER,
    join.NotHomeNetwork: ACTIVATION_DISALLOWED,
    join.MICMismatch: MIC_FAILED,
    join.NonceReplayed: JOIN_REQ_FAILED,
    join.JoinNonceExhausted: JOIN_REQ_FAILED,
    join.NoApplicationKey: ACTIVATION_DISALLOWED,
    join.JoinFailed: OTHER,
}


def result_code(error: join.JoinRejected, protocol_version: str = "1.0") -> str:
    """The Result code for a refusal; protocol 1.1 spells MalformedRequest as MalformedMessage."""
    code = RESULT_FOR.get(type(error), OTHER)
    return malformed(protocol_version) if code == MALFORMED_REQUEST else code


def malformed(protocol_version: str) -> str:
    return MALFORMED_MESSAGE if protocol_version == "1.1" else MALFORMED_REQUEST
