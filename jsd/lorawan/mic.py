"""The bytes each join-procedure MIC is computed over; the CMAC itself (first 4 bytes) belongs to the HSM.

Join-request: 1.0.2 §6.2.4, 1.1 §6.2.2. Join-accept: 1.0.2 §6.2.5, 1.1 §6.2.3. Rejoin-request: 1.1 §6.2.4.
"""

from __future__ import annotations

from jsd.lorawan.frames import (
    EUI_SIZE,
    JOIN_ACCEPT_BODY_SIZES,
    MHDR_JOIN_ACCEPT,
    MIC_SIZE,
    FrameError,
    parse_join_request,
    parse_rejoin_request,
    to_wire,
    uint_to_wire,
)

__all__ = [
    "JOIN_REQ_TYPE_JOIN",
    "join_accept_mic_input_legacy",
    "join_accept_mic_input_optneg",
    "join_accept_optneg_prefix",
    "join_request_mic_input",
    "rejoin_mic_input",
]

# JoinReqType of an accept answering a Join-request; an accept answering a Rejoin-request uses its type 0, 1 or 2
# (1.1 §6.2.3, Table 13).
JOIN_REQ_TYPE_JOIN = 0xFF
_JOIN_REQ_TYPES = (JOIN_REQ_TYPE_JOIN, 0, 1, 2)


def join_request_mic_input(phy: bytes) -> bytes:
    """MHDR | JoinEUI | DevEUI | DevNonce: the 19 bytes before the MIC, MIC'ed with AppKey (1.0.x) or NwkKey (1.1).

    The frame is validated first, so a MIC is never checked over something that is not a Join-request.
    """
    parse_join_request(phy)
    return phy[:-MIC_SIZE]


def rejoin_mic_input(phy: bytes) -> bytes:
    """Everything before the MIC of a Rejoin-request (validated first).

    Types 0 and 2 are MIC'ed with SNwkSIntKey and checked by the NS; type 1 with JSIntKey, checked by the JS.
    """
    parse_rejoin_request(phy)
    return phy[:-MIC_SIZE]


def join_accept_mic_input_legacy(body: bytes) -> bytes:
    """MHDR | body, MIC'ed with AppKey (1.0.x) or NwkKey (a 1.1 device served with OptNeg=0)."""
    if len(body) not in JOIN_ACCEPT_BODY_SIZES:
        raise FrameError(f"JoinAccept body must be 12 or 28 bytes, got {len(body)}")
    return bytes([MHDR_JOIN_ACCEPT]) + body


def join_accept_optneg_prefix(join_req_type: int, join_eui: bytes, dev_nonce: int) -> bytes:
    """JoinReqType | JoinEUI | DevNonce in air order: what the OptNeg accept MIC puts before MHDR | body.

    For a Rejoin-request, dev_nonce is its RJcount (1.1 §6.2.3).
    """
    if join_req_type not in _JOIN_REQ_TYPES:
        raise FrameError(
            f"join_req_type must be 0xff (Join-request) or 0, 1, 2 (Rejoin), got {join_req_type}"
        )
    return (
        bytes([join_req_type])
        + to_wire(join_eui, EUI_SIZE, "join_eui")
        + uint_to_wire(dev_nonce, 2, "dev_nonce")
    )


def join_accept_mic_input_optneg(join_req_type: int, join_eui: bytes, dev_nonce: int, body: bytes) -> bytes:
    """JoinReqType | JoinEUI | DevNonce | MHDR | body, MIC'ed with JSIntKey when OptNeg is set (1.1 §6.2.3).

    Choose this formula from the negotiated version, not from the DLSettings byte in the body.
    """
    return join_accept_optneg_prefix(join_req_type, join_eui, dev_nonce) + join_accept_mic_input_legacy(body)
