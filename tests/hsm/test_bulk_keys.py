"""Bulk imports wrap and generate root keys many at a time: each blob holds its own key, in order."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from jsd.hsm import Hsm, MicMismatch

MESSAGE = b"\x00join request body"


def _mic(key: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(MESSAGE)
    return mac.finalize()[:4]


async def test_import_root_keys_wraps_each_key_in_order(hsm: Hsm) -> None:
    keys = [secrets.token_bytes(16) for _ in range(5)]
    blobs = await hsm.import_root_keys("default", keys)
    assert len(blobs) == 5 and len(set(blobs)) == 5
    for blob, key in zip(blobs, keys, strict=True):
        await hsm.check_mic("default", blob, MESSAGE, _mic(key))
    with pytest.raises(MicMismatch):
        await hsm.check_mic("default", blobs[0], MESSAGE, _mic(keys[1]))
    assert await hsm.import_root_keys("default", []) == []


async def test_generate_root_keys_returns_each_blob_with_its_clear_key(hsm: Hsm) -> None:
    made = await hsm.generate_root_keys("default", 3)
    assert len({key for _, key in made}) == 3
    for blob, key in made:
        await hsm.check_mic("default", blob, MESSAGE, _mic(key))
