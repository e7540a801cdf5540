"""The answer of a bulk import, parked in the staging table until it is sent, so memory stays flat at any size.

Each answer line (owner token, generated keys) is sealed with AES-GCM under a key made for this one import
that exists only in this worker's memory and is dropped with the import: the database only ever holds
ciphertext nobody can open once the answer is sent or the process dies. The rows are deleted as soon as the
answer has been read back.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import fields
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from jsd.ownership.model import ImportedDevice
from jsd.registry.devices import DeviceStore

__all__ = ["ImportAnswer"]

ANSWER_PAGE = 1000
"""Answer lines read back per query."""
_FIELDS = tuple(f.name for f in fields(ImportedDevice) if f.name != "line")  # the line is the nonce
_HEX_FIELDS = ("dev_eui", "join_eui", "profile_id", "app_key", "nwk_key")  # bytes, as hex in JSON


class ImportAnswer:
    """An import's answer: lines sealed while the file is staged, counted, then read back in file order."""

    def __init__(self, store: DeviceStore) -> None:
        # Its own staging id, apart from the device rows (which the commit consumes), and random: an Import-Id
        # reused while an answer is still being read cannot mix two answers.
        self.batch_id = secrets.token_hex(16)
        self.created = 0
        self.unchanged = 0
        self._store = store
        self._aead: AESGCM | None = AESGCM(AESGCM.generate_key(bit_length=128))

    def seal(self, item: ImportedDevice) -> tuple[int, str, bytes]:
        """(line, DevEUI, sealed line) for the staging table; the line number is the nonce (unique per key)."""
        assert self._aead is not None and item.line is not None
        self.created += item.created
        self.unchanged += not item.created
        plain: dict[str, Any] = {name: getattr(item, name) for name in _FIELDS}
        for name in _HEX_FIELDS:
            if plain[name] is not None:
                plain[name] = plain[name].hex()
        eui = item.dev_eui.hex()
        sealed = self._aead.encrypt(_nonce(item.line), json.dumps(plain).encode(), eui.encode())
        return item.line, eui, sealed

    async def pages(self) -> AsyncIterator[list[ImportedDevice]]:
        """The answer in file order, a page at a time; the key is forgotten once the last page is read."""
        last = -1
        while self._aead is not None:
            page = await self._store.staged_page(self.batch_id, last, ANSWER_PAGE)
            if not page:
                self._aead = None
                return
            last = page[-1][0]
            yield [self._open(line, eui, sealed) for line, eui, sealed in page]

    def _open(self, line: int, eui: str, sealed: bytes) -> ImportedDevice:
        assert self._aead is not None
        plain = json.loads(self._aead.decrypt(_nonce(line), sealed, eui.encode()))
        for name in _HEX_FIELDS:
            if plain[name] is not None:
                plain[name] = bytes.fromhex(plain[name])
        return ImportedDevice(line=line, **plain)


def _nonce(line: int) -> bytes:
    return line.to_bytes(12, "big")
