"""LBI Result codes (TS002-1.0.0 Table 24, exact spelling) and the one table that maps join refusals to them."""

from __future__ import annotations

from jsd.join import Reason, Refusal, RefusalName

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

RESULT_FOR: dict[Reason, str] = {
    Reason.MALFORMED: MALFORMED_REQUEST,
    Reason.UNKNOWN_DEVICE: UNKNOWN_DEV_EUI,
    Reason.JOIN_EUI_NOT_SERVED: UNKNOWN_RECEIVER,
    Reason.NOT_HOME_NETWORK: ACTIVATION_DISALLOWED,
    Reason.WRONG_MIC: MIC_FAILED,
    Reason.NONCE_REPLAYED: JOIN_REQ_FAILED,
    Reason.JOIN_NONCE_EXHAUSTED: JOIN_REQ_FAILED,
    Reason.NO_APPLICATION_KEY: ACTIVATION_DISALLOWED,
    Reason.FAILED: OTHER,
}


def result_code(refusal: Refusal, protocol_version: str = "1.0") -> str:
    """The Result code for a refusal; protocol 1.1 spells MalformedRequest as MalformedMessage."""
    code = RESULT_FOR.get(refusal.reason, OTHER)
    return malformed(protocol_version) if code == MALFORMED_REQUEST else code


def _code_10(refusal: Refusal) -> str:
    return result_code(refusal, "1.0")


def _code_11(refusal: Refusal) -> str:
    return result_code(refusal, "1.1")


def namer(protocol_version: str) -> RefusalName:
    """`result_code` for one protocol version, as the join service names the refusals it records."""
    return _code_11 if protocol_version == "1.1" else _code_10


def malformed(protocol_version: str) -> str:
    return MALFORMED_MESSAGE if protocol_version == "1.1" else MALFORMED_REQUEST
