"""Application-server crypto: unwrap an AppSKey envelope with an ASTK, en/decrypt FRMPayloads.

This is the application server's side of end-to-end encryption, not the daemon's: the AppSKey must be in
clear here to read the payloads, so software AES (``cryptography``) is the right tool. FRMPayload encryption
is LoRaWAN 1.0.x §4.3.3 / 1.1 §4.3.3 (same for both with the AppSKey): blocks
A_i = 0x01 | 0x00×4 | Dir | DevAddr (LE) | FCnt (32-bit LE) | 0x00 | i, i from 1; S = AES(AppSKey, A_1..A_k);
FRMPayload = data XOR S. Dir is 0 for uplinks, 1 for downlinks.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

UPLINK = 0
DOWNLINK = 1
MAX_FRM_PAYLOAD = 242  # the largest FRMPayload of any region and data rate


class PayloadError(ValueError):
    """An envelope or payload that cannot be opened; the text names what, never a key."""


def unwrap_app_s_key(astk: bytes, wrapped: bytes) -> bytes:
    """RFC 3394 unwrap (default IV) of a 24-byte KeyEnvelope AESKey with the ASTK; the AppSKey."""
    if len(astk) not in (16, 24, 32):
        raise PayloadError("an ASTK is an AES key (16, 24 or 32 bytes)")
    if len(wrapped) != 24:
        raise PayloadError(f"a wrapped AppSKey is 24 bytes, not {len(wrapped)}")
    try:
        return aes_key_unwrap(astk, wrapped)
    except InvalidUnwrap:
        raise PayloadError("the AppSKey envelope does not unwrap with this ASTK") from None


def frm_payload_crypt(app_s_key: bytes, dev_addr: bytes, f_cnt: int, direction: int, data: bytes) -> bytes:
    """Encrypt or decrypt (the same XOR) an FRMPayload; ``dev_addr`` big-endian as displayed, ``f_cnt`` 32 bits."""
    if len(app_s_key) != 16:
        raise PayloadError("an AppSKey is 16 bytes")
    if len(dev_addr) != 4:
        raise PayloadError("a DevAddr is 4 bytes")
    if not 0 <= f_cnt < 2**32:
        raise PayloadError("FCnt must be a 32-bit counter")
    if direction not in (UPLINK, DOWNLINK):
        raise PayloadError("direction is 0 (uplink) or 1 (downlink)")
    if len(data) > MAX_FRM_PAYLOAD:
        raise PayloadError(f"an FRMPayload has at most {MAX_FRM_PAYLOAD} bytes")
    if not data:
        return b""
    prefix = b"\x01" + bytes(4) + bytes([direction]) + dev_addr[::-1] + f_cnt.to_bytes(4, "little") + b"\x00"
    blocks = b"".join(prefix + bytes([i]) for i in range(1, (len(data) + 15) // 16 + 1))
    encryptor = Cipher(algorithms.AES(app_s_key), modes.ECB()).encryptor()
    stream = encryptor.update(blocks) + encryptor.finalize()
    return bytes(a ^ b for a, b in zip(data, stream, strict=False))
