"""TR005 "LoRaWAN Device Identification QR Code" strings: parse and build, nothing graphical.

Layout (TR005 final, Appendix A): ``LW:D0:<JoinEUI>:<DevEUI>:<ProfileID>[:O<token>][:S<serial>][:P<data>][:C<crc>]``.
The checksum is CRC-16/MODBUS over the ASCII text before ``:C``; we emit it last so it covers everything, and we
verify it wherever it stands. Output is uppercase so the QR symbol can use the compact alphanumeric mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DeviceQr", "QrChecksumError", "QrCodeError", "build_qr", "crc16_modbus", "parse_qr"]


class QrCodeError(ValueError):
    """The text is not a TR005 device QR string, or a value does not fit in one; the message names the part."""


class QrChecksumError(QrCodeError):
    """The ``C`` extension does not match the text it covers: a misread or altered label."""

    def __init__(self, stated: int, computed: int) -> None:
        super().__init__(f"checksum mismatch: label says {stated:04X}, text gives {computed:04X}")
        self.stated = stated
        self.computed = computed


@dataclass(frozen=True)
class DeviceQr:
    """The fields of one device QR code; EUIs and ProfileID as big-endian display-order bytes."""

    join_eui: bytes
    dev_eui: bytes
    profile_id: bytes = b"\0\0\0\0"
    owner_token: str | None = None
    serial: str | None = None
    proprietary: str | None = None


PREFACE = "LW"
SCHEMA_ID = "D0"
_HEX = re.compile(r"[0-9A-Fa-f]+")
# TR005 keeps OwnerToken and SerNum to the QR alphanumeric letters and digits (TTS draft-3 validator).
_TOKEN = re.compile(r"[0-9A-Z]+")
# Proprietary data: any printable ASCII but the part separator.
_PROPRIETARY = re.compile(r"[\x20-\x39\x3b-\x7e]+")
_TAGS = {"O": "owner_token", "S": "serial", "P": "proprietary"}


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (reflected poly 0xA001, init 0xFFFF, no final xor): the one that reproduces TR005's example."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def build_qr(qr: DeviceQr, *, checksum: bool = True) -> str:
    """The canonical string: uppercase hex, extensions O, S, P in that order, then the checksum last."""
    parts = [
        PREFACE,
        SCHEMA_ID,
        _fixed_hex(qr.join_eui, 8, "join_eui"),
        _fixed_hex(qr.dev_eui, 8, "dev_eui"),
        _fixed_hex(qr.profile_id, 4, "profile_id"),
    ]
    for tag, field in _TAGS.items():
        value: str | None = getattr(qr, field)
        if value is None:
            continue
        pattern = _PROPRIETARY if tag == "P" else _TOKEN
        if not pattern.fullmatch(value):
            allowed = "printable ASCII without ':'" if tag == "P" else "0-9 and A-Z"
            raise QrCodeError(f"{field}: {value!r} must be one or more characters of {allowed}")
        parts.append(tag + value)
    text = ":".join(parts)
    if checksum:
        text += f":C{crc16_modbus(text.encode('ascii')):04X}"
    return text


def parse_qr(text: str) -> DeviceQr:
    """Read a scanned string; lenient on case and extension order, strict on EUIs, ProfileID and the checksum.

    Empty extensions (``:O``) and unknown tags are skipped, as TTS does. The checksum, wherever it stands,
    covers the text before its own ``:C``; a mismatch raises QrChecksumError.
    """
    text = text.strip()
    if not text.isascii():
        raise QrCodeError("not a TR005 code: non-ASCII characters")
    parts = text.split(":")
    if len(parts) < 5:
        raise QrCodeError(f"not a TR005 code: {len(parts)} parts, need at least 5 (LW:D0:JoinEUI:DevEUI:ProfileID)")
    if parts[0] != PREFACE or parts[1] != SCHEMA_ID:
        raise QrCodeError(f"not a TR005 device code: starts {parts[0]}:{parts[1]}, expected {PREFACE}:{SCHEMA_ID}")
    join_eui = _parse_hex(parts[2], 8, "JoinEUI")
    dev_eui = _parse_hex(parts[3], 8, "DevEUI")
    profile_id = _parse_hex(parts[4], 4, "ProfileID")
    fields: dict[str, str] = {}
    for index, part in enumerate(parts[5:], start=5):
        if len(part) <= 1:
            continue
        tag, value = part[0], part[1:]
        if tag in fields:
            raise QrCodeError(f"extension {tag} appears twice")
        if tag == "C":
            _verify_checksum(value, ":".join(parts[:index]))
            fields[tag] = value
        elif tag in _TAGS:
            fields[tag] = _extension_value(tag, value)
    return DeviceQr(
        join_eui=join_eui,
        dev_eui=dev_eui,
        profile_id=profile_id,
        owner_token=fields.get("O"),
        serial=fields.get("S"),
        proprietary=fields.get("P"),
    )


def _fixed_hex(value: bytes, size: int, field: str) -> str:
    if len(value) != size:
        raise QrCodeError(f"{field}: {len(value)} bytes, need {size}")
    return value.hex().upper()


def _parse_hex(part: str, size: int, name: str) -> bytes:
    if len(part) != 2 * size or not _HEX.fullmatch(part):
        raise QrCodeError(f"{name}: {part!r} is not {2 * size} hex digits")
    return bytes.fromhex(part)


def _extension_value(tag: str, value: str) -> str:
    """O and S are case-insensitive letters and digits, returned uppercase; P is kept as printed."""
    if tag == "P":
        return value
    if not _TOKEN.fullmatch(value.upper()):
        raise QrCodeError(f"extension {tag}: {value!r} must be letters and digits only")
    return value.upper()


def _verify_checksum(value: str, covered: str) -> None:
    if len(value) != 4 or not _HEX.fullmatch(value):
        raise QrCodeError(f"checksum: {value!r} is not 4 hex digits")
    stated, computed = int(value, 16), crc16_modbus(covered.encode("ascii"))
    if stated != computed:
        raise QrChecksumError(stated, computed)
