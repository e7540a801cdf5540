"""AES primitives for the simulated device and network server.

Written against `cryptography` only, never against the daemon, so that a simulator pass is an
independent check of the Join Server's key handling. Every function is one-shot over a few blocks.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import cmac as _cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

__all__ = [
    "InvalidUnwrap",
    "aes_cmac",
    "aes_ecb_decrypt",
    "aes_ecb_encrypt",
    "constant_time_equal",
    "key_unwrap",
    "key_wrap",
    "mic4",
]


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != 16:
        raise ValueError("an AES-128 key must be 16 bytes")


def _check_blocks(data: bytes) -> None:
    if len(data) == 0 or len(data) % 16:
        raise ValueError("AES-ECB input must be a non-empty multiple of 16 bytes")


def aes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """AES-128-ECB encrypt: key derivation, and the device's way of opening a join-accept."""
    _check_key(key)
    _check_blocks(data)
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def aes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    """AES-128-ECB decrypt: what a Join Server applies to "encrypt" a join-accept (used by test fakes)."""
    _check_key(key)
    _check_blocks(data)
    dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return dec.update(data) + dec.finalize()


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """Full 16-byte AES-CMAC (RFC 4493)."""
    _check_key(key)
    c = _cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def mic4(key: bytes, data: bytes) -> bytes:
    """LoRaWAN MIC: the first four bytes of the AES-CMAC."""
    return aes_cmac(key, data)[:4]


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare MICs and keys without leaking where they differ."""
    return hmac.compare_digest(a, b)


def key_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    """RFC 3394 unwrap with the default IV, as ChirpStack does for KeyEnvelopes; raises InvalidUnwrap."""
    return aes_key_unwrap(kek, wrapped)


def key_wrap(kek: bytes, key: bytes) -> bytes:
    """RFC 3394 wrap with the default IV (test fakes and the HTTP ceiling server build envelopes with it)."""
    return aes_key_wrap(kek, key)
