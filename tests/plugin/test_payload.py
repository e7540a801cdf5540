"""FRMPayload crypto and envelope unwrapping of the application side, against AES-CTR from ``cryptography``."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from jsd_chirpstack.payload import PayloadError, frm_payload_crypt, unwrap_app_s_key


def device_encrypt(app_s_key: bytes, dev_addr: bytes, f_cnt: int, direction: int, data: bytes) -> bytes:
    """LoRaWAN FRMPayload encryption written as AES-CTR from A_1 (i sits in the last byte, which CTR counts)."""
    a1 = b"\x01" + bytes(4) + bytes([direction]) + dev_addr[::-1] + f_cnt.to_bytes(4, "little") + b"\x00\x01"
    encryptor = Cipher(algorithms.AES(app_s_key), modes.CTR(a1)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 51, 242])
def test_frm_payload_matches_aes_ctr(size: int) -> None:
    key, dev_addr, data = secrets.token_bytes(16), secrets.token_bytes(4), secrets.token_bytes(size)
    for direction in (0, 1):
        sealed = frm_payload_crypt(key, dev_addr, 0x12345678, direction, data)
        assert sealed == device_encrypt(key, dev_addr, 0x12345678, direction, data)
        assert frm_payload_crypt(key, dev_addr, 0x12345678, direction, sealed) == data
    if size >= 4:  # one byte alike by chance is 1 in 256; four bytes, 1 in 2**32
        assert frm_payload_crypt(key, dev_addr, 1, 0, data) != frm_payload_crypt(key, dev_addr, 1, 1, data)


def test_bad_inputs_are_refused_without_key_material() -> None:
    with pytest.raises(PayloadError, match="242"):
        frm_payload_crypt(bytes(16), bytes(4), 0, 0, bytes(243))
    with pytest.raises(PayloadError, match="32-bit"):
        frm_payload_crypt(bytes(16), bytes(4), 2**32, 0, b"x")
    with pytest.raises(PayloadError, match="does not unwrap") as raised:
        unwrap_app_s_key(secrets.token_bytes(16), secrets.token_bytes(24))
    assert "0x" not in str(raised.value)
