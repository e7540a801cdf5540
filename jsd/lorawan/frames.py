"""Join-procedure frames: parse and build the bytes, nothing cryptographic.

Callers hold EUIs, NetID and DevAddr in big-endian display order; this module is where they turn into the
little-endian order of the air (LoRaWAN 1.0.2 and 1.1 §4: multi-octet fields are sent little endian).
Frame layouts follow LoRaWAN 1.1 §6.2.2 (Join-request), §6.2.3 (Join-accept), §6.2.4 (Rejoin-request).
"""

from __future__ import annotations

from dataclasses import dataclass


class FrameError(ValueError):
    """A frame, or a value meant for one, does not fit its LoRaWAN layout; the message names the field."""


MHDR_JOIN_REQUEST = 0x00
MHDR_JOIN_ACCEPT = 0x20
MHDR_REJOIN_REQUEST = 0xC0

# DLSettings bit 7 (1.1 §6.2.3): a 1.1 JS sets it to select the 1.1 accept MIC and derivation; RFU in 1.0.x.
OPT_NEG = 0x80
# RxDelay bits 3..0 carry the delay; bits 7..4 are RFU (1.1 §6.2.3, §5.7).
RX_DELAY_MAX = 0x0F

EUI_SIZE = 8
NET_ID_SIZE = 3
DEV_ADDR_SIZE = 4
MIC_SIZE = 4
CF_LIST_SIZE = 16
JOIN_REQUEST_SIZE = 23
JOIN_ACCEPT_BODY_SIZES = (12, 12 + CF_LIST_SIZE)
_REJOIN_SIZES = {0: 19, 1: 24, 2: 19}

_MTYPE_NAMES = (
    "JoinRequest",
    "JoinAccept",
    "UnconfirmedDataUp",
    "UnconfirmedDataDown",
    "ConfirmedDataUp",
    "ConfirmedDataDown",
    "RejoinRequest",
    "Proprietary",
)


@dataclass(frozen=True)
class JoinRequest:
    """A parsed Join-request; EUIs in display order, DevNonce as an integer."""

    join_eui: bytes
    dev_eui: bytes
    dev_nonce: int
    mic: bytes


@dataclass(frozen=True)
class RejoinRequest:
    """A parsed Rejoin-request: types 0 and 2 carry a NetID, type 1 a JoinEUI (the other one is None)."""

    rejoin_type: int
    net_id: bytes | None
    join_eui: bytes | None
    dev_eui: bytes
    rj_count: int
    mic: bytes


@dataclass(frozen=True)
class JoinAcceptFields:
    """The Join-accept payload before MIC and encryption; rx_delay is the Del value (0..15)."""

    join_nonce: int
    net_id: bytes
    dev_addr: bytes
    dl_settings: int
    rx_delay: int
    cf_list: bytes | None


def to_wire(value: bytes, size: int, field: str) -> bytes:
    """Check a display-order field's length and return it in air order."""
    _check_size(value, size, field)
    return value[::-1]


def uint_to_wire(value: int, size: int, field: str) -> bytes:
    """Encode a counter or nonce as `size` little-endian bytes, refusing values that do not fit."""
    limit = 1 << (8 * size)
    if not 0 <= value < limit:
        raise FrameError(f"{field} must be 0..{limit - 1} ({size} bytes), got {value}")
    return value.to_bytes(size, "little")


def has_opt_neg(dl_settings: int) -> bool:
    """True when DLSettings has the OptNeg bit set."""
    return bool(dl_settings & OPT_NEG)


def with_opt_neg(dl_settings: int, opt_neg: bool) -> int:
    """DLSettings with OptNeg set or cleared; a 1.0.x accept must have it clear (1.1 §6.2.3)."""
    return (dl_settings | OPT_NEG) if opt_neg else (dl_settings & ~OPT_NEG & 0xFF)


def parse_join_request(phy: bytes) -> JoinRequest:
    """Read a Join-request PHYPayload: MHDR | JoinEUI | DevEUI | DevNonce | MIC (23 bytes)."""
    _check_mhdr(phy, MHDR_JOIN_REQUEST, "JoinRequest")
    _check_size(phy, JOIN_REQUEST_SIZE, "JoinRequest")
    return JoinRequest(
        join_eui=phy[1:9][::-1],
        dev_eui=phy[9:17][::-1],
        dev_nonce=int.from_bytes(phy[17:19], "little"),
        mic=phy[19:],
    )


def build_join_request(join_eui: bytes, dev_eui: bytes, dev_nonce: int, mic: bytes) -> bytes:
    """Write a Join-request PHYPayload; the inverse of parse_join_request."""
    return (
        bytes([MHDR_JOIN_REQUEST])
        + to_wire(join_eui, EUI_SIZE, "join_eui")
        + to_wire(dev_eui, EUI_SIZE, "dev_eui")
        + uint_to_wire(dev_nonce, 2, "dev_nonce")
        + _mic(mic)
    )


def parse_rejoin_request(phy: bytes) -> RejoinRequest:
    """Read a Rejoin-request: MHDR | type | NetID (0, 2) or JoinEUI (1) | DevEUI | RJcount | MIC."""
    _check_mhdr(phy, MHDR_REJOIN_REQUEST, "RejoinRequest")
    if len(phy) < 2:
        raise FrameError(f"RejoinRequest must be 19 or 24 bytes, got {len(phy)}")
    rejoin_type = phy[1]
    _check_size(phy, _rejoin_size(rejoin_type), f"RejoinRequest type {rejoin_type}")
    id_end = len(phy) - (EUI_SIZE + 2 + MIC_SIZE)
    identifier = phy[2:id_end][::-1]
    return RejoinRequest(
        rejoin_type=rejoin_type,
        net_id=None if rejoin_type == 1 else identifier,
        join_eui=identifier if rejoin_type == 1 else None,
        dev_eui=phy[id_end : id_end + EUI_SIZE][::-1],
        rj_count=int.from_bytes(phy[-MIC_SIZE - 2 : -MIC_SIZE], "little"),
        mic=phy[-MIC_SIZE:],
    )


def build_rejoin_request(
    rejoin_type: int,
    net_id: bytes | None,
    join_eui: bytes | None,
    dev_eui: bytes,
    rj_count: int,
    mic: bytes,
) -> bytes:
    """Write a Rejoin-request; pass net_id for types 0 and 2, join_eui for type 1, and None for the other."""
    _rejoin_size(rejoin_type)
    if rejoin_type == 1:
        identifier = to_wire(_required(join_eui, "join_eui", rejoin_type), EUI_SIZE, "join_eui")
        _absent(net_id, "net_id", rejoin_type)
    else:
        identifier = to_wire(_required(net_id, "net_id", rejoin_type), NET_ID_SIZE, "net_id")
        _absent(join_eui, "join_eui", rejoin_type)
    return (
        bytes([MHDR_REJOIN_REQUEST, rejoin_type])
        + identifier
        + to_wire(dev_eui, EUI_SIZE, "dev_eui")
        + uint_to_wire(rj_count, 2, "rj_count")
        + _mic(mic)
    )


def join_accept_body(f: JoinAcceptFields) -> bytes:
    """JoinNonce | NetID | DevAddr | DLSettings | RxDelay | CFList in air order (12 bytes, or 28 with a CFList).

    These are the bytes that get MIC'ed and then, with the MIC, encrypted.
    """
    if not 0 <= f.dl_settings <= 0xFF:
        raise FrameError(f"dl_settings must be one byte (0..255), got {f.dl_settings}")
    if not 0 <= f.rx_delay <= RX_DELAY_MAX:
        raise FrameError(f"rx_delay must be 0..{RX_DELAY_MAX} (RxDelay bits 7..4 are RFU), got {f.rx_delay}")
    cf_list = b""
    if f.cf_list is not None:
        _check_size(f.cf_list, CF_LIST_SIZE, "cf_list")
        cf_list = f.cf_list
    return (
        uint_to_wire(f.join_nonce, 3, "join_nonce")
        + to_wire(f.net_id, NET_ID_SIZE, "net_id")
        + to_wire(f.dev_addr, DEV_ADDR_SIZE, "dev_addr")
        + bytes([f.dl_settings, f.rx_delay])
        + cf_list
    )


def parse_join_accept_body(body: bytes) -> JoinAcceptFields:
    """Read a plaintext Join-accept body (no MHDR, no MIC); the inverse of join_accept_body."""
    if len(body) not in JOIN_ACCEPT_BODY_SIZES:
        raise FrameError(f"JoinAccept body must be 12 or 28 bytes, got {len(body)}")
    if body[11] > RX_DELAY_MAX:
        raise FrameError(f"JoinAccept RxDelay 0x{body[11]:02x} has RFU bits 7..4 set")
    return JoinAcceptFields(
        join_nonce=int.from_bytes(body[0:3], "little"),
        net_id=body[3:6][::-1],
        dev_addr=body[6:10][::-1],
        dl_settings=body[10],
        rx_delay=body[11],
        cf_list=body[12:] or None,
    )


def parse_join_accept(phy_plain: bytes) -> tuple[JoinAcceptFields, bytes]:
    """Read a decrypted Join-accept (MHDR | body | MIC) into its fields and MIC.

    Checking the MIC is the caller's job, as it needs a key.
    """
    _check_mhdr(phy_plain, MHDR_JOIN_ACCEPT, "JoinAccept")
    if len(phy_plain) - 1 - MIC_SIZE not in JOIN_ACCEPT_BODY_SIZES:
        raise FrameError(f"decrypted JoinAccept must be 17 or 33 bytes, got {len(phy_plain)}")
    return parse_join_accept_body(phy_plain[1:-MIC_SIZE]), phy_plain[-MIC_SIZE:]


def _check_mhdr(phy: bytes, expected: int, frame: str) -> None:
    """MType (bits 7..5) must name the expected frame; Major (bits 1..0) must be 0, LoRaWAN R1 (1.1 §4.2)."""
    if not phy:
        raise FrameError(f"{frame} is empty")
    mhdr = phy[0]
    mtype = mhdr >> 5
    if mtype != expected >> 5:
        got = f"{mtype:03b} ({_MTYPE_NAMES[mtype]})"
        raise FrameError(f"{frame} needs MType {expected >> 5:03b}, got {got} in MHDR 0x{mhdr:02x}")
    major = mhdr & 0x03
    if major != 0:
        raise FrameError(f"{frame} MHDR 0x{mhdr:02x} has Major {major}; only 0 (LoRaWAN R1) is defined")


def _check_size(value: bytes, size: int, field: str) -> None:
    if len(value) != size:
        raise FrameError(f"{field} must be {size} bytes, got {len(value)}")


def _mic(mic: bytes) -> bytes:
    _check_size(mic, MIC_SIZE, "mic")
    return mic


def _rejoin_size(rejoin_type: int) -> int:
    try:
        return _REJOIN_SIZES[rejoin_type]
    except KeyError:
        raise FrameError(f"RejoinType must be 0, 1 or 2, got {rejoin_type}") from None


def _required(value: bytes | None, field: str, rejoin_type: int) -> bytes:
    if value is None:
        raise FrameError(f"RejoinRequest type {rejoin_type} needs {field}")
    return value


def _absent(value: bytes | None, field: str, rejoin_type: int) -> None:
    if value is not None:
        raise FrameError(f"RejoinRequest type {rejoin_type} carries no {field}; pass None")
