"""Strict parsing of identifiers and keys given as hex text; errors name the field."""

from __future__ import annotations

import re

from jsd.ownership.model import FieldError, InvalidRequest

__all__ = ["parse_eui", "parse_hex", "parse_key", "parse_net_id"]

_HEX = re.compile(r"[0-9a-fA-F]*")


def parse_hex(value: object, field: str, nbytes: int, what: str) -> bytes:
    """`nbytes` bytes from exactly 2*nbytes hex digits (an optional 0x prefix and either case accepted)."""
    if not isinstance(value, str):
        raise _invalid(field, f"{what} must be a string of {2 * nbytes} hex digits")
    text = value.strip()
    if text[:2].lower() == "0x":
        text = text[2:]
    if len(text) != 2 * nbytes or not _HEX.fullmatch(text):
        raise _invalid(field, f"{what} must be {2 * nbytes} hex digits")
    return bytes.fromhex(text)


def parse_eui(value: object, field: str = "dev_eui") -> bytes:
    return parse_hex(value, field, 8, "an EUI")


def parse_net_id(value: object, field: str = "net_id") -> bytes:
    return parse_hex(value, field, 3, "a NetID")


def parse_key(value: object, field: str) -> bytes:
    return parse_hex(value, field, 16, "an AES-128 key")


def _invalid(field: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {reason}", errors=[FieldError(field, reason)])
