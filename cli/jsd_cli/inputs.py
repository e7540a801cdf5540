"""Values read from the command line and from key files, checked before anything is sent or stored."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import click


def eui(value: str, what: str, length: int = 8) -> bytes:
    """An EUI or NetID given as hex, with or without ``0x``, ``-`` or ``:``."""
    try:
        data = bytes.fromhex(value.removeprefix("0x").replace("-", "").replace(":", ""))
    except ValueError:
        raise click.BadParameter(f"{what} is not hex") from None
    if len(data) != length:
        raise click.BadParameter(f"{what} must be {length} bytes ({2 * length} hex digits)")
    return data


def read_secret_hex(source: str, what: str, length: int = 16) -> bytes:
    """A key given as hex in a file (or '-' for standard input)."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    try:
        value = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        raise click.BadParameter(f"{what} is not hex") from None
    if len(value) != length:
        raise click.BadParameter(f"{what} must be {length} bytes ({2 * length} hex digits)")
    return value


def cert_fingerprint(cert_file: str) -> str:
    """SHA-256 of a PEM certificate's DER form: how an NS's TLS client certificate is recognised."""
    import ssl

    der = ssl.PEM_cert_to_DER_cert(Path(cert_file).read_text())
    return hashlib.sha256(der).hexdigest()
