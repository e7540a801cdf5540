"""Strict decoding of LBI 1.0 JSON: wire names declared once, hex tolerant of case and ``0x``, strict otherwise.

Hex fields (TS002-1.0.0 writes binary fields as hexadecimal strings) are digits only, of the exact length: no spaces, tabs or
newlines, which Python's ``bytes.fromhex`` would skip. Either case is accepted, since The Things Stack writes
upper case (lorawan-stack ``pkg/interop`` ``Buffer.MarshalText``) and ChirpStack lower case, and so is a
``0x`` prefix, which The Things Stack strips on its own input. An empty ``CFList`` is the absent CFList: The
Things Stack always sends the member, as ``""`` when there is none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsd.join import JoinParams
from jsd.lorawan import parse_mac_version

PROTOCOL_VERSIONS = ("1.0", "1.1")
REQUEST_TYPES = {
    "JoinReq": "JoinAns",
    "RejoinReq": "RejoinAns",
    "HomeNSReq": "HomeNSAns",
    "AppSKeyReq": "AppSKeyAns",
}


class DecodeError(Exception):
    """The message cannot be understood; the text names the field and says what is wrong."""


@dataclass(frozen=True)
class Header:
    protocol_version: str
    sender_id: str
    receiver_id: str
    transaction_id: int
    message_type: str
    sender_token: str | None


def hex_bytes(value: str, field: str) -> bytes:
    """Hex digits (either case, optional ``0x``) as bytes; anything else, whitespace included, is refused."""
    text = value[2:] if value[:2] in ("0x", "0X") else value
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise DecodeError(f"{field} is not valid hex") from None
    if 2 * len(data) != len(text):
        raise DecodeError(f"{field} is not valid hex (digits only, no spaces)")
    return data


def decode_hex(message: dict[str, Any], field: str, length: int | None = None, *, required: bool = True) -> bytes | None:
    """A hex field as bytes; ``None`` when optional and absent (an optional ``""`` counts as absent)."""
    value = message.get(field)
    if value is None or (value == "" and not required):
        if required:
            raise DecodeError(f"{field} is missing")
        return None
    if not isinstance(value, str):
        raise DecodeError(f"{field} must be a hex string")
    data = hex_bytes(value, field)
    if length is not None and len(data) != length:
        raise DecodeError(f"{field} must be {length} bytes ({2 * length} hex digits)")
    return data


def required_hex(message: dict[str, Any], field: str, length: int | None = None) -> bytes:
    data = decode_hex(message, field, length)
    assert data is not None
    return data


def decode_int(message: dict[str, Any], field: str, low: int, high: int) -> int:
    value = message.get(field)
    if value is None:
        raise DecodeError(f"{field} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{field} must be an integer")
    if not low <= value <= high:
        raise DecodeError(f"{field} must be between {low} and {high}")
    return value


def _text(message: dict[str, Any], field: str, *, empty: bool = False) -> str:
    """A string member; a missing one and one of another JSON type are told apart in the error."""
    value = message.get(field)
    if value is None or (value == "" and not empty):
        raise DecodeError(f"{field} is missing")
    if not isinstance(value, str):
        raise DecodeError(f"{field} must be a string")
    return value


def decode_header(message: Any) -> Header:
    """The header common to every message; raises ``DecodeError`` if it is unusable."""
    if not isinstance(message, dict):
        raise DecodeError("the body must be a JSON object")
    message_type = _text(message, "MessageType")
    protocol_version = _text(message, "ProtocolVersion", empty=True)
    sender_id = _text(message, "SenderID")
    receiver_id = _text(message, "ReceiverID", empty=True)
    transaction_id = message.get("TransactionID")
    sender_token = message.get("SenderToken")
    if transaction_id is None:
        raise DecodeError("TransactionID is missing")
    if isinstance(transaction_id, bool) or not isinstance(transaction_id, int) or not 0 <= transaction_id < 2**32:
        raise DecodeError("TransactionID must be an unsigned 32-bit integer")
    if sender_token is not None and not isinstance(sender_token, str):
        raise DecodeError("SenderToken must be a string")
    return Header(protocol_version, sender_id, receiver_id, transaction_id, message_type, sender_token)


def decode_join_params(message: dict[str, Any], header: Header) -> JoinParams:
    """JoinReq and RejoinReq share their fields."""
    version_text = _text(message, "MACVersion")
    try:
        mac_version = parse_mac_version(version_text)
    except ValueError:
        raise DecodeError(f"MACVersion {version_text[:16]!r} is not a LoRaWAN version served here") from None
    receiver = header.receiver_id
    try:
        receiver_id = decode_hex({"ReceiverID": receiver}, "ReceiverID", 8)
    except DecodeError:
        raise DecodeError("ReceiverID must be a JoinEUI (16 hex digits)") from None
    dl_settings = required_hex(message, "DLSettings", 1)[0]
    return JoinParams(
        mac_version=mac_version,
        phy_payload=required_hex(message, "PHYPayload"),
        dev_eui=required_hex(message, "DevEUI", 8),
        dev_addr=required_hex(message, "DevAddr", 4),
        dl_settings=dl_settings,
        rx_delay=decode_int(message, "RxDelay", 0, 15),
        cf_list=decode_hex(message, "CFList", 16, required=False),
        receiver_id=receiver_id,
    )


def decode_session_key_id(message: dict[str, Any]) -> str:
    value = message.get("SessionKeyID")
    if not isinstance(value, str) or not value:
        raise DecodeError("SessionKeyID is missing")
    data = hex_bytes(value, "SessionKeyID")
    if len(data) > 64:
        raise DecodeError("SessionKeyID is too long")
    return data.hex()
