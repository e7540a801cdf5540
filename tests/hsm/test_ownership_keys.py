"""Keys of the ownership workflow: ASTKs that can be exported exactly once, secure-element root keys."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from pkcs11 import Attribute, ObjectClass
from pkcs11.types import Session

from jsd.hsm import Hsm, KekExists, KeyNotExportable, MicMismatch

from .conftest import InToken


def _label(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def test_a_generated_astk_is_exported_once_then_locked(hsm: Hsm, in_token: InToken) -> None:
    label = _label("astk")
    await hsm.generate_exportable_kek(label)
    key = await hsm.export_kek_once(label)
    assert len(key) == 16 and key != bytes(16)
    with pytest.raises(KeyNotExportable):
        await hsm.export_kek_once(label)

    def attrs(session: Session) -> tuple[bool, bool, bool]:
        (obj,) = session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label})
        return obj[Attribute.SENSITIVE], obj[Attribute.EXTRACTABLE], obj[Attribute.WRAP]

    assert await in_token(attrs) == (True, False, True)


async def test_an_imported_kek_is_never_exported(hsm: Hsm) -> None:
    label = _label("astk")
    await hsm.import_kek(label, secrets.token_bytes(16))
    with pytest.raises(KeyNotExportable):
        await hsm.export_kek_once(label)
    with pytest.raises(KekExists):
        await hsm.generate_exportable_kek(label)


async def test_secure_element_root_key_is_aes_ecb_of_the_lot_master_key(hsm: Hsm, in_token: InToken) -> None:
    await hsm.ensure_storage_kek("default")
    master, label = secrets.token_bytes(16), _label("lmk")
    await hsm.import_lot_master_key(label, master)
    block = secrets.token_bytes(16)
    blob = await hsm.derive_root_key("default", label, block)
    expected = Cipher(algorithms.AES(master), modes.ECB()).encryptor().update(block)

    message = secrets.token_bytes(19)
    cmac = CMAC(algorithms.AES(expected))
    cmac.update(message)
    await hsm.check_mic("default", blob, message, cmac.finalize()[:4])
    with pytest.raises(MicMismatch):
        await hsm.check_mic("default", blob, message, b"\0\0\0\0")

    def readable(session: Session) -> object:
        (obj,) = session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label})
        return obj[Attribute.SENSITIVE], obj[Attribute.EXTRACTABLE], obj[Attribute.DERIVE]

    assert await in_token(readable) == (True, False, True)
