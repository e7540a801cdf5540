"""What a PIN holder can and cannot do with the keys `jsd.hsm` leaves in the token (docs/pkcs11.md §5.10)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pkcs11.exceptions as p11err
import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.types import Session

from jsd.hsm import (
    Derive,
    Hsm,
    HsmError,
    HsmSettings,
    InvalidKeyBlob,
    JoinRecipe,
    KeyNotFound,
    MicMismatch,
    cryptoki,
    session_store_kek_label,
    storage_kek_label,
)

InToken = Callable[[Callable[[Session], Any]], Awaitable[Any]]

ROOT_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
ATTACKER_KEK = bytes.fromhex("00112233445566778899aabbccddeeff")
_ATTACKER_TEMPLATE = {
    Attribute.CLASS: ObjectClass.SECRET_KEY,
    Attribute.KEY_TYPE: KeyType.AES,
    Attribute.TOKEN: False,
    Attribute.VALUE: ATTACKER_KEK,
    Attribute.WRAP: True,
    Attribute.UNWRAP: True,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
}


def _cmac4(key: bytes, message: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()[:4]


def _storage_kek(session: Session, group: str = "default") -> Any:
    return session.get_key(label=storage_kek_label(group), object_class=ObjectClass.SECRET_KEY)


def _unwrap(kek: Any, blob: bytes, template: dict[Attribute, Any], key_type: KeyType = KeyType.AES) -> Any:
    return kek.unwrap_key(
        ObjectClass.SECRET_KEY,
        key_type,
        blob,
        mechanism=Mechanism.AES_KEY_WRAP,
        capabilities=0,
        template={Attribute.TOKEN: False, **template},
    )


async def test_pin_holder_cannot_recover_a_root_key(hsm: Hsm, in_token: InToken) -> None:
    """The attack of docs/pkcs11.md §5.10: unwrap the DB blob extractable, re-wrap it under one's own KEK."""
    blob = await hsm.import_root_key("default", ROOT_KEY)

    def attack(session: Session) -> dict[str, str]:
        kek = _storage_kek(session)
        own = session.create_object(_ATTACKER_TEMPLATE)
        outcome: dict[str, str] = {}
        attempts: dict[str, Callable[[], Any]] = {
            "extractable": lambda: _unwrap(kek, blob, {Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True}),
            "attributes omitted": lambda: _unwrap(kek, blob, {}),
            "not sensitive": lambda: _unwrap(kek, blob, {Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: False}),
            "generic secret": lambda: _unwrap(
                kek, blob, {Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True}, KeyType.GENERIC_SECRET
            ),
            "set DECRYPT on the KEK": lambda: kek.__setitem__(Attribute.DECRYPT, True),
            "copy the KEK": lambda: kek.copy({Attribute.TOKEN: False}),
        }
        for name, attempt in attempts.items():
            try:
                attempt().destroy()
                outcome[name] = "succeeded"
            except p11err.PKCS11Error as exc:
                outcome[name] = type(exc).__name__
        # The legitimate unwrap works, but the key it gives cannot leave the token.
        root = _unwrap(kek, blob, {Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True, Attribute.SIGN: True})
        try:
            own.wrap_key(root, mechanism=Mechanism.AES_KEY_WRAP)
            outcome["re-wrap legit unwrap"] = "succeeded"
        except p11err.PKCS11Error as exc:
            outcome["re-wrap legit unwrap"] = type(exc).__name__
        try:
            root[Attribute.EXTRACTABLE] = True
            outcome["make extractable"] = "succeeded"
        except p11err.PKCS11Error as exc:
            outcome["make extractable"] = type(exc).__name__
        root.destroy()
        own.destroy()
        return outcome

    outcome = await in_token(attack)

    # CKR_ACTION_PROHIBITED (MODIFIABLE/COPYABLE=False) has no python-pkcs11 class: it is a bare PKCS11Error.
    assert outcome == {
        "extractable": "TemplateInconsistent",
        "attributes omitted": "TemplateInconsistent",
        "not sensitive": "TemplateInconsistent",
        "generic secret": "TemplateInconsistent",
        "set DECRYPT on the KEK": "PKCS11Error",
        "copy the KEK": "PKCS11Error",
        "re-wrap legit unwrap": "KeyUnextractable",
        "make extractable": "AttributeReadOnly",
    }


async def test_plain_kek_would_have_allowed_the_attack(hsm: Hsm, in_token: InToken) -> None:
    """Control experiment: without CKA_UNWRAP_TEMPLATE the same steps recover the key."""

    def attack(session: Session) -> bytes:
        plain = session.generate_key(
            KeyType.AES,
            256,
            store=False,
            template={Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.EXTRACTABLE: False},
        )
        clear = session.create_object({**_ATTACKER_TEMPLATE, Attribute.VALUE: ROOT_KEY, Attribute.EXTRACTABLE: True})
        blob = plain.wrap_key(clear, mechanism=Mechanism.AES_KEY_WRAP)
        own = session.create_object(_ATTACKER_TEMPLATE)
        stolen = _unwrap(plain, blob, {Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True})
        rewrapped: bytes = own.wrap_key(stolen, mechanism=Mechanism.AES_KEY_WRAP)
        for obj in (plain, clear, own, stolen):
            obj.destroy()
        return rewrapped

    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

    assert aes_key_unwrap(ATTACKER_KEK, await in_token(attack)) == ROOT_KEY


async def test_storage_keks_are_protected(hsm: Hsm, hsm_settings: HsmSettings, in_token: InToken) -> None:
    def inspect(session: Session) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for label in (storage_kek_label("default"), session_store_kek_label("default")):
            kek = session.get_key(label=label, object_class=ObjectClass.SECRET_KEY)
            attrs = kek.get_attributes(
                [
                    Attribute.TOKEN,
                    Attribute.SENSITIVE,
                    Attribute.EXTRACTABLE,
                    Attribute.MODIFIABLE,
                    Attribute.COPYABLE,
                    Attribute.LOCAL,
                    Attribute.VALUE_LEN,
                    Attribute.WRAP,
                    Attribute.UNWRAP,
                    Attribute.ENCRYPT,
                    Attribute.DECRYPT,
                    Attribute.SIGN,
                    Attribute.DERIVE,
                ]
            )
            enforced = cryptoki.library(hsm_settings.module).get_template_attribute(
                session.handle,
                kek.handle,
                Attribute.UNWRAP_TEMPLATE,  # type: ignore[attr-defined]
            )
            result[label] = (attrs, enforced)
        return result

    found = await in_token(inspect)

    for label, enforced in (
        (storage_kek_label("default"), {Attribute.EXTRACTABLE: b"\x00", Attribute.SENSITIVE: b"\x01"}),
        (session_store_kek_label("default"), {Attribute.SENSITIVE: b"\x01"}),
    ):
        attrs, template = found[label]
        assert template == enforced, label
        assert attrs == {
            Attribute.TOKEN: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.MODIFIABLE: False,
            Attribute.COPYABLE: False,
            Attribute.LOCAL: True,
            Attribute.VALUE_LEN: 32,
            Attribute.WRAP: True,
            Attribute.UNWRAP: True,
            Attribute.ENCRYPT: False,
            Attribute.DECRYPT: False,
            Attribute.SIGN: False,
            Attribute.DERIVE: False,
        }, label


async def test_transport_kek_and_its_session_copy_only_wrap(hsm: Hsm, in_token: InToken) -> None:
    label = f"ns:{secrets.token_hex(4)}"
    await hsm.import_kek(label, secrets.token_bytes(16))
    blob = await hsm.import_root_key("default", ROOT_KEY)
    recipe = JoinRecipe(
        group="default",
        roots={"app": blob},
        derives=[Derive("s", "app", bytes(16), "session")],
        request_mic=None,
        accept_mic=("app", b"\x20" + bytes(12)),
        accept_body=bytes(12),
        accept_encrypt="app",
        wraps=[("s", label)],
        store=[],
    )
    await hsm.run_join(recipe)  # makes the session copy

    keys = [Attribute.TOKEN, Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.MODIFIABLE, Attribute.WRAP]
    keys += [Attribute.UNWRAP, Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.SIGN, Attribute.DERIVE]
    found = await in_token(
        lambda session: sorted(
            (obj.get_attributes(keys) for obj in session.get_objects({Attribute.LABEL: label})),
            key=lambda attrs: attrs[Attribute.TOKEN],
        )
    )

    usage_off = {kind: False for kind in keys[5:]}
    copy_attrs, token_attrs = found
    assert token_attrs == {
        Attribute.TOKEN: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.MODIFIABLE: True,
        Attribute.WRAP: True,
        **usage_off,
    }
    assert copy_attrs == {**token_attrs, Attribute.TOKEN: False, Attribute.MODIFIABLE: False}


async def test_weak_storage_kek_is_refused(hsm: Hsm, in_token: InToken) -> None:
    """A `jsd-storage-*` key made by someone else (no unwrap template, modifiable) is never used."""
    await in_token(
        lambda session: session.generate_key(
            KeyType.AES,
            256,
            label=storage_kek_label("weak"),
            store=True,
            template={Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.EXTRACTABLE: False},
        )
    )

    with pytest.raises(HsmError, match="lacks its protections"):
        await hsm.import_root_key("weak", ROOT_KEY)
    with pytest.raises(HsmError, match="lacks its protections"):
        await hsm.ensure_storage_kek("weak")


async def test_no_key_material_in_errors_reprs_or_logs(
    hsm: Hsm, hsm_settings: HsmSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    kek = secrets.token_bytes(16)
    label = f"as:{secrets.token_hex(4)}"
    await hsm.import_kek(label, kek)
    blob = await hsm.import_root_key("default", ROOT_KEY)
    request = b"\x00" + bytes(18)
    recipe = JoinRecipe(
        group="default",
        roots={"app": blob},
        derives=[Derive("s", "app", bytes(16), "session")],
        request_mic=("app", request, b"\x00\x00\x00\x00"),
        accept_mic=("app", b"\x20" + bytes(12)),
        accept_body=bytes(12),
        accept_encrypt="app",
        wraps=[("s", label)],
        store=["s"],
    )
    failures: list[BaseException] = []
    attempts: list[Awaitable[Any]] = [
        hsm.run_join(recipe),
        hsm.check_mic("default", blob, request, b"\x00\x00\x00\x00"),
        hsm.check_mic("default", blob[:-1] + b"\x00", request, b"\x00\x00\x00\x00"),
        hsm.import_kek(label, kek),
        hsm.rewrap("default", blob, label),
        hsm.import_root_key("nowhere", ROOT_KEY),
    ]
    for attempt in attempts:
        with pytest.raises((MicMismatch, InvalidKeyBlob, KeyNotFound, HsmError)) as caught:
            await attempt
        failures.append(caught.value)
    with pytest.raises(ValueError) as short:
        await hsm.import_root_key("default", ROOT_KEY[:15])
    failures.append(short.value)

    texts = [str(exc) for exc in failures] + [repr(exc) for exc in failures]
    texts += [
        repr(hsm),
        str(hsm),
        repr(hsm_settings),
        str(hsm_settings.pin),
        f"{hsm_settings.pin}",
        caplog.text,
    ]
    secrets_ = [ROOT_KEY, kek, hsm_settings.pin.reveal().encode()]
    for text in texts:
        for secret in secrets_:
            for form in (secret.hex(), secret.hex().upper(), repr(secret), secret.decode("latin-1")):
                assert form not in text, text


_USAGE_KEYS = [
    Attribute.TOKEN,
    Attribute.SENSITIVE,
    Attribute.EXTRACTABLE,
    Attribute.ENCRYPT,
    Attribute.DECRYPT,
    Attribute.SIGN,
    Attribute.VERIFY,
    Attribute.WRAP,
    Attribute.UNWRAP,
    Attribute.DERIVE,
]
_NOTHING = {kind: b"\x00" for kind in _USAGE_KEYS} | {Attribute.SENSITIVE: b"\x01", Attribute.VALUE: None}


async def test_join_key_objects_get_only_what_they_need(
    hsm: Hsm, hsm_settings: HsmSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session objects run_join really creates, read back just before they are destroyed."""
    label = f"ns:{secrets.token_hex(4)}"
    await hsm.import_kek(label, secrets.token_bytes(16))
    blob = await hsm.import_root_key("default", ROOT_KEY)
    request = b"\x00" + bytes(18)
    recipe = JoinRecipe(
        group="default",
        roots={"nwk": blob, "app": blob},
        derives=[
            Derive("js_int", "nwk", bytes(16), "mic"),
            Derive("js_enc", "nwk", b"\x05" + bytes(15), "enc"),
            Derive("nwk_s", "nwk", b"\x01" + bytes(15), "session"),
            Derive("app_s", "app", b"\x02" + bytes(15), "session"),
        ],
        request_mic=("nwk", request, _cmac4(ROOT_KEY, request)),
        accept_mic=("js_int", b"\x20" + bytes(12)),
        accept_body=bytes(12),
        accept_encrypt="nwk",
        wraps=[("nwk_s", label), ("app_s", label)],
        store=["app_s"],
    )
    slots = iter([*recipe.roots, *(step.slot for step in recipe.derives)])
    seen: dict[str, dict[int, bytes | None]] = {}
    destroy = cryptoki.Cryptoki.destroy

    def inspect_then_destroy(self: cryptoki.Cryptoki, session: int, handle: int) -> None:
        seen[next(slots)] = self.get_attributes(session, handle, [*_USAGE_KEYS, Attribute.VALUE])
        destroy(self, session, handle)

    monkeypatch.setattr(cryptoki.Cryptoki, "destroy", inspect_then_destroy)

    await hsm.run_join(recipe)

    on = b"\x01"
    assert seen == {
        "nwk": _NOTHING | {Attribute.SIGN: on, Attribute.DECRYPT: on, Attribute.DERIVE: on},
        "app": _NOTHING | {Attribute.DERIVE: on},
        "js_int": _NOTHING | {Attribute.SIGN: on},
        "js_enc": _NOTHING | {Attribute.DECRYPT: on},
        "nwk_s": _NOTHING | {Attribute.EXTRACTABLE: on},
        "app_s": _NOTHING | {Attribute.EXTRACTABLE: on},
    }


async def test_management_key_objects_get_only_what_they_need(hsm: Hsm, in_token: InToken) -> None:
    """The templates of check_mic (root key) and rewrap/import (wrappable key), as the token reports them."""
    blob = await hsm.import_root_key("default", ROOT_KEY)

    def probe(session: Session) -> dict[str, Any]:
        kek = _storage_kek(session)
        found: dict[str, Any] = {}
        root = _unwrap(kek, blob, dict(cryptoki.root_key(frozenset({"sign"})).attrs))
        clear = session.create_object({**cryptoki.WRAPPABLE.attrs, Attribute.VALUE: ROOT_KEY})
        try:
            for name, key in (("root", root), ("wrappable", clear)):
                found[name] = key.get_attributes(_USAGE_KEYS)
                try:
                    key[Attribute.VALUE]
                    found[name + " value"] = "readable"
                except p11err.AttributeSensitive:
                    pass
        finally:
            root.destroy()
            clear.destroy()
        return found

    found = await in_token(probe)

    nothing = {kind: False for kind in _USAGE_KEYS} | {Attribute.SENSITIVE: True}
    assert found == {
        "root": nothing | {Attribute.SIGN: True},
        "wrappable": nothing | {Attribute.EXTRACTABLE: True},
    }
