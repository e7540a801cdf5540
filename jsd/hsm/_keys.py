"""The key operations of `Hsm`, each run inside `_token.run` on the jsd-hsm thread.

The key objects and their templates are described in `cryptoki.py` (and docs/design.md): storage KEKs per
group, transport KEKs copied once per login into session objects, and session objects for everything a
join or an import unwraps or derives, destroyed before the operation returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import hmac
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

import pkcs11.exceptions as p11err
from pkcs11.constants import Attribute, ObjectClass

from jsd.hsm import cryptoki
from jsd.hsm._token import Login
from jsd.hsm.cryptoki import Cryptoki, Template, TemplateValue
from jsd.hsm.errors import HsmError, InvalidKeyBlob, KekExists, KeyNotExportable, KeyNotFound, MicMismatch
from jsd.hsm.recipe import JoinOutput, JoinRecipe, session_store_kek_label, storage_kek_label

log = logging.getLogger("jsd.hsm")

BLOB_LEN: Final = 24
_KEY_BYTES: Final = 16
_TRUE: Final = cryptoki.encode(True)
_FALSE: Final = cryptoki.encode(False)
# What a storage KEK must show before it is used: its own template's protections, read back from the token.
_GUARDED: Final = (Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.MODIFIABLE, Attribute.WRAP, Attribute.UNWRAP)
# SoftHSM2 reports a failed RFC 3394 integrity check as CKR_GENERAL_ERROR, like a lost token (docs/pkcs11.md §5.5).
_BAD_BLOB: Final = (
    p11err.WrappedKeyInvalid,
    p11err.WrappedKeyLenRange,
    p11err.EncryptedDataInvalid,
    p11err.GeneralError,
)


# Key lookups ---------------------------------------------------------------------------------------------


def _token_keys(login: Login, label: str) -> list[int]:
    query = Template(
        {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label.encode("utf-8"), Attribute.TOKEN: True}
    )
    return login.lib.find(login.live, query)


def _one_token_key(login: Login, label: str) -> int:
    found = _token_keys(login, label)
    if not found:
        raise KeyNotFound(f"no key labelled {label!r} in the token")
    if len(found) > 1:
        raise HsmError(f"several keys labelled {label!r} in the token")
    return found[0]


def _storage_kek(login: Login, label: str, unwrap: Mapping[int, TemplateValue]) -> int:
    """Find a storage KEK once per login and refuse one that lacks its protections."""
    kek = login.storage.get(label)
    if kek is not None:
        return kek
    kek = _one_token_key(login, label)
    expected = cryptoki.storage_kek(label, unwrap).encoded(_GUARDED)
    attrs = login.lib.get_attributes(login.live, kek, _GUARDED)
    enforced = login.lib.get_template_attribute(login.live, kek, Attribute.UNWRAP_TEMPLATE)
    if attrs != expected or enforced != Template(unwrap).encoded():
        raise HsmError(f"storage KEK {label!r} lacks its protections (unwrap template, non-modifiable)")
    login.storage[label] = kek
    return kek


def root_kek(login: Login, group: str) -> int:
    return _storage_kek(login, storage_kek_label(group), cryptoki.ROOT_UNWRAP)


def session_store_kek(login: Login, group: str) -> int:
    return _storage_kek(login, session_store_kek_label(group), cryptoki.SESSION_UNWRAP)


def transport_kek(login: Login, label: str) -> int:
    """The session copy of a transport KEK, made on first use (token objects are slow, docs/pkcs11.md §2)."""
    copy = login.transport.get(label)
    if copy is None:
        original = _one_token_key(login, label)
        if login.lib.get_attributes(login.live, original, [Attribute.WRAP]) != {Attribute.WRAP: _TRUE}:
            raise HsmError(f"key {label!r} is not a wrapping key")
        copy = login.transport[label] = login.lib.copy_object(login.live, original, cryptoki.SESSION_COPY)
    return copy


# Session objects -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _scratch(lib: Cryptoki, session: int) -> Iterator[dict[str, int]]:
    """Session objects put in the dict are destroyed on the way out (design step 6).

    On error the original exception wins; on success a failed destroy is raised, so a leak is noticed.
    """
    objects: dict[str, int] = {}
    try:
        yield objects
    finally:
        failure: p11err.PKCS11Error | None = None
        for key in objects.values():
            try:
                lib.destroy(session, key)
            except p11err.PKCS11Error as exc:
                failure = failure or exc
    if failure is not None:
        raise failure


def _unwrap(login: Login, kek: int, blob: bytes, template: Template, what: str) -> int:
    """A blob as a session object; `InvalidKeyBlob` if it does not unwrap while the KEK still answers."""
    if len(blob) != BLOB_LEN:
        raise InvalidKeyBlob(f"{what}: a key blob is {BLOB_LEN} bytes, got {len(blob)}")
    try:
        return login.lib.unwrap(login.live, kek, blob, template)
    except _BAD_BLOB as exc:
        if isinstance(exc, p11err.GeneralError):
            login.lib.get_attributes(login.live, kek, [Attribute.KEY_TYPE])  # raises if the token is gone
        raise InvalidKeyBlob(f"{what} does not unwrap") from None


def _check_mic(login: Login, key: int, message: bytes, mic: bytes) -> None:
    if not hmac.compare_digest(login.lib.cmac4(login.live, key, message), mic):
        raise MicMismatch("MIC mismatch")


def _import_clear(login: Login, scratch: dict[str, int], kek: int, key: bytes) -> bytes:
    scratch["clear"] = login.lib.create_object(login.live, cryptoki.WRAPPABLE | {Attribute.VALUE: key})
    return login.lib.wrap(login.live, kek, scratch["clear"])


def _create_token_key(login: Login, label: str, template: Template, value: bytes, what: str) -> None:
    if _token_keys(login, label):
        raise KekExists(f"a key labelled {label!r} is already in the token")
    login.lib.create_object(login.live, template | {Attribute.LABEL: label.encode("utf-8"), Attribute.VALUE: value})
    log.info("%s %r", what, label)


# Operations ------------------------------------------------------------------------------------------------


def ensure_storage_kek(login: Login, group: str) -> bool:
    created = False
    for label, unwrap in (
        (storage_kek_label(group), cryptoki.ROOT_UNWRAP),
        (session_store_kek_label(group), cryptoki.SESSION_UNWRAP),
    ):
        if not _token_keys(login, label):
            login.lib.generate_key(login.live, cryptoki.storage_kek(label, unwrap))
            log.info("created storage KEK %r", label)
            created = True
    root_kek(login, group)
    session_store_kek(login, group)
    return created


def import_root_key(login: Login, group: str, key: bytes) -> bytes:
    kek = root_kek(login, group)
    with _scratch(login.lib, login.live) as scratch:
        return _import_clear(login, scratch, kek, key)


def generate_root_key(login: Login, group: str) -> tuple[bytes, bytes]:
    key = login.lib.generate_random(login.live, _KEY_BYTES)
    return import_root_key(login, group, key), key


def import_root_keys(login: Login, group: str, keys: Sequence[bytes]) -> list[bytes]:
    """`import_root_key` for many keys in one hop to this thread (bulk imports); each clear object destroyed."""
    kek = root_kek(login, group)
    template = cryptoki.WRAPPABLE | {Attribute.VALUE: bytes(_KEY_BYTES)}
    value = template.value_buffer(Attribute.VALUE)  # rewritten per key: no template built per key
    blobs = []
    try:
        for key in keys:
            ctypes.memmove(value, key, _KEY_BYTES)
            with _scratch(login.lib, login.live) as scratch:
                scratch["clear"] = login.lib.create_object(login.live, template)
                blobs.append(login.lib.wrap(login.live, kek, scratch["clear"]))
    finally:
        ctypes.memset(value, 0, _KEY_BYTES)
    return blobs


def generate_root_keys(login: Login, group: str, count: int) -> list[tuple[bytes, bytes]]:
    """`generate_root_key` `count` times in one hop."""
    keys = [login.lib.generate_random(login.live, _KEY_BYTES) for _ in range(count)]
    return list(zip(import_root_keys(login, group, keys), keys, strict=True))


def import_kek(login: Login, label: str, key: bytes) -> None:
    _create_token_key(login, label, cryptoki.TRANSPORT_KEK, key, "imported KEK")


def has_kek(login: Login, label: str) -> bool:
    return bool(_token_keys(login, label))


def generate_random(login: Login, nbytes: int) -> bytes:
    return login.lib.generate_random(login.live, nbytes)


def check_mic(login: Login, group: str, blob: bytes, message: bytes, mic: bytes) -> None:
    kek = root_kek(login, group)
    with _scratch(login.lib, login.live) as scratch:
        what = f"root key blob of group {group!r}"
        scratch["root"] = _unwrap(login, kek, blob, cryptoki.root_key(frozenset({"sign"})), what)
        _check_mic(login, scratch["root"], message, mic)


def rewrap(login: Login, group: str, blob: bytes, kek_label: str) -> bytes:
    kek = transport_kek(login, kek_label)
    store_kek = session_store_kek(login, group)
    with _scratch(login.lib, login.live) as scratch:
        what = f"stored key blob of group {group!r}"
        scratch["stored"] = _unwrap(login, store_kek, blob, cryptoki.WRAPPABLE, what)
        return login.lib.wrap(login.live, kek, scratch["stored"])


def run_join(login: Login, recipe: JoinRecipe) -> JoinOutput:
    """docs/design.md "join recipe": unwrap, derive, check, MIC, encrypt, wrap, destroy — one thread hop."""
    lib, session = login.lib, login.live
    storage = root_kek(login, recipe.group)
    keks = {label: transport_kek(login, label) for _slot, label in recipe.wraps}
    store_kek = session_store_kek(login, recipe.group) if recipe.store else 0
    usage, request = recipe.root_usage(), recipe.request_mic
    with _scratch(lib, session) as slots:
        for name, blob in recipe.roots.items():
            if len(blob) != BLOB_LEN:
                raise InvalidKeyBlob(f"root key blob {name!r}: a key blob is {BLOB_LEN} bytes, got {len(blob)}")
            what = f"root key blob {name!r} of group {recipe.group!r}"
            slots[name] = _unwrap(login, storage, blob, cryptoki.root_key(usage[name]), what)
            if request is not None and request[0] == name:
                _check_mic(login, slots[name], request[1], request[2])
        for step in recipe.derives:
            slots[step.slot] = lib.derive_ecb(session, slots[step.parent], step.block, cryptoki.DERIVED[step.usage])
            if request is not None and request[0] == step.slot:
                _check_mic(login, slots[step.slot], request[1], request[2])
        mic = lib.cmac4(session, slots[recipe.accept_mic[0]], recipe.accept_mic[1])
        encrypted = lib.decrypt_ecb(session, slots[recipe.accept_encrypt], recipe.accept_body + mic)
        wrapped = {(slot, label): lib.wrap(session, keks[label], slots[slot]) for slot, label in recipe.wraps}
        stored = {slot: lib.wrap(session, store_kek, slots[slot]) for slot in recipe.store}
    return JoinOutput(encrypted_accept=encrypted, wrapped=wrapped, stored=stored)


# Ownership workflow: exportable-once ASTKs and secure-element root keys ---------------------------------


def generate_exportable_kek(login: Login, label: str) -> None:
    value = login.lib.generate_random(login.live, _KEY_BYTES)
    _create_token_key(login, label, cryptoki.EXPORTABLE_ASTK, value, "generated exportable KEK")


def export_kek_once(login: Login, label: str) -> bytes:
    key = _one_token_key(login, label)
    attrs = login.lib.get_attributes(login.live, key, [Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.VALUE])
    value = attrs.get(Attribute.VALUE)
    if attrs.get(Attribute.SENSITIVE) != _FALSE or attrs.get(Attribute.EXTRACTABLE) != _TRUE or value is None:
        raise KeyNotExportable(f"key {label!r} cannot be exported (imported, or exported before)")
    login.lib.set_attributes(login.live, key, cryptoki.LOCKED_AFTER_EXPORT)
    log.info("exported KEK %r once; it is locked now", label)
    return value


def import_lot_master_key(login: Login, label: str, key: bytes) -> None:
    _create_token_key(login, label, cryptoki.LOT_MASTER_KEY, key, "imported lot master key")


def derive_root_key(login: Login, group: str, master_label: str, block: bytes) -> bytes:
    """``AES-ECB(master, block)`` as a key inside the token, returned wrapped under the group's storage KEK."""
    kek = root_kek(login, group)
    master = _one_token_key(login, master_label)
    with _scratch(login.lib, login.live) as scratch:
        scratch["derived"] = login.lib.derive_ecb(login.live, master, block, cryptoki.DERIVED["session"])
        return login.lib.wrap(login.live, kek, scratch["derived"])
