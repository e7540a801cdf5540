"""The synchronous side of `Hsm`: logins, KEK lookups and the join itself.

Everything here runs in the jsd-hsm thread (`_thread.py`); `Hsm` is the only caller.

Key objects (docs/design.md, docs/pkcs11.md §5.10):

- storage KEKs, two per HSM group, AES-256 from the token's generator, created through ctypes because they
  carry ``CKA_UNWRAP_TEMPLATE``:

  - ``jsd-storage-<group>`` wraps root keys; its unwrap template forces ``EXTRACTABLE=False,
    SENSITIVE=True``, so a PIN holder with a DB blob cannot unwrap it extractable and re-wrap it under a KEK
    of their own;
  - ``jsd-sessions-<group>`` wraps session keys kept for AppSKeyReq; its unwrap template forces only
    ``SENSITIVE=True``, because a stored AppSKey must be re-wrapped for an AS later. A root blob does not
    unwrap under it (RFC 3394 integrity check), so root keys never leave through `rewrap`.

  Both are ``MODIFIABLE=False``: on a modifiable KEK a PIN holder can set ``CKA_DECRYPT`` and undo RFC 3394 in
  software. SoftHSM2 2.6.1 refuses to copy a non-modifiable object into a session object
  (``CKR_ATTRIBUTE_READ_ONLY`` for ``TOKEN=False``), so storage KEKs are used as token objects and are also
  ``COPYABLE=False`` (an identical token copy would only add clutter).
- transport KEKs (NS KEKs, ASTKs): imported AES-128 token objects, ``WRAP`` only, left ``MODIFIABLE`` and
  ``COPYABLE`` so that each process copies them once into a non-modifiable session object: every C call on a
  token object costs SoftHSM2 ~17 syscalls (docs/pkcs11.md §2). The copy lives as long as the login: a KEK deleted
  from the token keeps working in a running daemon until it restarts.
- root keys after unwrap and all derived keys: session objects, ``SENSITIVE``, with exactly the usages the
  recipe needs, destroyed before the executor call returns.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

import pkcs11
import pkcs11.exceptions as p11err
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass, TokenFlag
from pkcs11.types import Object, Session, SignMixin, Token, UnwrapMixin, WrapMixin

from jsd.hsm._cryptoki import TemplateValue, cryptoki
from jsd.hsm._fastjoin import NO_USAGE, fast_join
from jsd.hsm._thread import assert_hsm_thread
from jsd.hsm.config import HsmSettings, Pin
from jsd.hsm.errors import (
    HsmError,
    HsmUnavailable,
    InvalidKeyBlob,
    KekExists,
    KeyNotExportable,
    KeyNotFound,
    MicMismatch,
)
from jsd.hsm.recipe import (
    JoinOutput,
    JoinRecipe,
    session_store_kek_label,
    storage_kek_label,
)

log = logging.getLogger("jsd.hsm")

T = TypeVar("T")
Template = dict[Attribute, Any]

BLOB_LEN: Final = 24
MIC_LEN: Final = 4

_NO_USAGE: Final[Template] = dict(NO_USAGE)
# Capabilities come from our templates; python-pkcs11's defaults would add ENCRYPT..UNWRAP (docs/pkcs11.md §5.2).
_NO_CAPABILITIES: Final = MechanismFlag(0)
# check_mic's root key: the storage KEK's unwrap template demands EXTRACTABLE and SENSITIVE explicitly.
# run_join builds its own templates in _fastjoin; test_security reads both back from the token.
_SIGN_ONLY_ROOT: Final[Template] = {**_NO_USAGE, Attribute.EXTRACTABLE: False, Attribute.SIGN: True}
# A clear key on its way into a blob, and a stored session key on its way to an AS: wrappable, nothing else.
_WRAPPABLE: Final[Template] = {**_NO_USAGE, Attribute.EXTRACTABLE: True}
_TRANSPORT_KEK: Final[Template] = {
    **_NO_USAGE,
    Attribute.TOKEN: True,
    Attribute.EXTRACTABLE: False,
    Attribute.WRAP: True,
    Attribute.MODIFIABLE: True,
    Attribute.COPYABLE: True,
}
_SESSION_COPY: Final[Template] = {Attribute.TOKEN: False, Attribute.MODIFIABLE: False}

_ROOT_UNWRAP_TEMPLATE: Final[Mapping[int, TemplateValue]] = {
    Attribute.EXTRACTABLE: False,
    Attribute.SENSITIVE: True,
}
_SESSION_UNWRAP_TEMPLATE: Final[Mapping[int, TemplateValue]] = {Attribute.SENSITIVE: True}


def _storage_kek_template(label: str, unwrap: Mapping[int, TemplateValue]) -> dict[int, TemplateValue]:
    return {
        **{int(kind): value for kind, value in _NO_USAGE.items() if kind != Attribute.KEY_TYPE},
        Attribute.KEY_TYPE: int(KeyType.AES),
        Attribute.CLASS: int(ObjectClass.SECRET_KEY),
        Attribute.VALUE_LEN: 32,
        Attribute.TOKEN: True,
        Attribute.EXTRACTABLE: False,
        Attribute.WRAP: True,
        Attribute.UNWRAP: True,
        Attribute.MODIFIABLE: False,
        Attribute.COPYABLE: False,
        Attribute.LABEL: label.encode("utf-8"),
        Attribute.UNWRAP_TEMPLATE: unwrap,
    }


# Return codes after which the session or the whole module is gone (docs/pkcs11.md §4).
_SESSION_LOST: Final = (
    p11err.GeneralError,
    p11err.SessionHandleInvalid,
    p11err.SessionClosed,
    p11err.UserNotLoggedIn,
    p11err.TokenNotPresent,
    p11err.DeviceRemoved,
    p11err.DeviceError,
)
# A cached KEK handle went stale (object deleted, session copy gone): look it up again.
_STALE_HANDLE: Final = (
    p11err.ObjectHandleInvalid,
    p11err.KeyHandleInvalid,
    p11err.WrappingKeyHandleInvalid,
    p11err.UnwrappingKeyHandleInvalid,
)
# SoftHSM2 rewrites its token file on every C_Login. Another process reading it at that moment (C_GetTokenInfo,
# C_Login) gets CKR_GENERAL_ERROR, or loses the token from its slot list until it re-initialises the module:
# measured with two processes logging in while a third ran joins (the joins were unaffected).
_LOGIN_RACES: Final = (p11err.GeneralError, p11err.NoSuchToken, p11err.TokenNotRecognised)
_CONNECT_ATTEMPTS: Final = 6
_PIN_REJECTED: Final = (
    p11err.PinIncorrect,
    p11err.PinInvalid,
    p11err.PinLenRange,
    p11err.PinLocked,
    p11err.PinExpired,
    p11err.UserPinNotInitialized,
)


@dataclass(eq=False)
class Login:
    """The logged-in session of one token, shared by every `Hsm` on it in this process.

    PKCS#11 login state is per application: closing the session that logged in logs out all of them, so
    the session stays open while any `Hsm` uses the token and is closed (logging out) by the last one.
    """

    settings: HsmSettings
    users: int = 0
    session: Session | None = None
    generation: int = -1
    owns_login: bool = False
    storage: dict[str, Object] = field(default_factory=dict)
    transport: dict[str, Object] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Login(token={self.settings.token_label!r}, users={self.users})"

    @property
    def live(self) -> Session:
        if self.session is None:
            raise HsmUnavailable(f"token {self.settings.token_label!r} is not logged in")
        return self.session

    def connect(self) -> None:
        """Open a session and log in, with a fresh module view between attempts (see `_LOGIN_RACES`)."""
        self.forget_keys()
        self.session = None
        module, label = self.settings.module, self.settings.token_label
        for attempt in range(1, _CONNECT_ATTEMPTS + 1):
            try:
                self.session, self.owns_login = _log_in(_library(module), label, self.settings.pin, module)
                self.generation = _generations[module]
                return
            except _PIN_REJECTED as exc:
                raise HsmUnavailable(f"token {label!r} rejected the user PIN ({type(exc).__name__})") from None
            except p11err.MultipleTokensReturned:
                raise HsmUnavailable(f"several tokens labelled {label!r} in {module}") from None
            except _LOGIN_RACES as exc:
                if attempt == _CONNECT_ATTEMPTS:
                    if isinstance(exc, p11err.NoSuchToken):
                        raise HsmUnavailable(f"no token labelled {label!r} in {module}") from None
                    raise HsmUnavailable(f"cannot log in to token {label!r} ({type(exc).__name__})") from exc
                time.sleep((10 + secrets.randbelow(40)) * attempt / 1000)
                _reinitialize(module)
            except p11err.PKCS11Error as exc:
                raise HsmUnavailable(f"cannot log in to token {label!r} ({type(exc).__name__})") from exc

    def forget_keys(self) -> None:
        self.storage.clear()
        self.transport.clear()

    def disconnect(self) -> None:
        """Destroy the KEK copies and close the session (which logs the token out)."""
        copies, self.transport = list(self.transport.values()), {}
        self.storage.clear()
        session, self.session = self.session, None
        if session is None or self.generation != _generations.get(self.settings.module):
            return
        _destroy_quietly(copies)
        try:
            if self.owns_login:
                cryptoki(self.settings.module).logout(_handle(session))
        except p11err.PKCS11Error as exc:
            log.warning("logging out of token %r failed: %s", self.settings.token_label, type(exc).__name__)
        _close_quietly(session)

    def recover(self, cause: Exception) -> None:
        """docs/pkcs11.md §4: finalise and re-initialise the module, then log in again."""
        module = self.settings.module
        log.warning(
            "PKCS#11 session of token %r lost (%s): re-initialising %s",
            self.settings.token_label,
            type(cause).__name__,
            module,
        )
        _reinitialize(module)
        self.connect()


def _log_in(lib: Any, label: str, pin: Pin, module: str) -> tuple[Session, bool]:
    """A new session on the token, logged in; True if this call did the login (and must log out)."""
    session: Session = lib.get_token(token_label=label).open(rw=True)
    try:
        cryptoki(module).login(_handle(session), pin)
    except p11err.UserAlreadyLoggedIn:
        # Other code in this process logged in (login is per application): use it, never log it out.
        return session, False
    except BaseException:
        _close_quietly(session)
        raise
    return session, True


def _reinitialize(module: str) -> None:
    """C_Finalize + C_Initialize: every session and session object of the module in this process is gone."""
    try:
        _library(module).reinitialize()
    except p11err.PKCS11Error as exc:
        raise HsmUnavailable(f"cannot re-initialise {module} ({type(exc).__name__})") from exc
    _generations[module] += 1


def _close_quietly(session: Session) -> None:
    """Close a session opened without a PIN (python-pkcs11 then skips C_Logout)."""
    with contextlib.suppress(p11err.PKCS11Error):
        session.close()


_logins: dict[tuple[str, str], Login] = {}
_generations: dict[str, int] = {}


def _library(module: str) -> Any:
    assert_hsm_thread()
    try:
        lib = pkcs11.lib(module)
    except p11err.PKCS11Error as exc:
        raise HsmUnavailable(f"cannot load the PKCS#11 module {module} ({type(exc).__name__})") from exc
    _generations.setdefault(module, 0)
    return lib


def loaded(module: str) -> bool:
    """True once this process has loaded `module` (its SoftHSM2 config is then fixed)."""
    return module in _generations


def acquire(settings: HsmSettings) -> Login:
    """Join the process-wide login of a token, logging in if nobody has."""
    assert_hsm_thread()
    key = (settings.module, settings.token_label)
    login = _logins.get(key)
    if login is not None:
        if login.settings.pin != settings.pin:
            raise HsmUnavailable(f"token {settings.token_label!r} is already open with another PIN")
    else:
        login = Login(settings)
        login.connect()
        _logins[key] = login
    login.users += 1
    return login


def release(login: Login) -> None:
    """Leave the login; the last user logs the token out."""
    assert_hsm_thread()
    login.users -= 1
    if login.users == 0:
        _logins.pop((login.settings.module, login.settings.token_label), None)
        login.disconnect()


def run(login: Login, operation: str, fn: Callable[..., T], *args: Any) -> T:
    """Run one operation, mapping PKCS#11 failures to `HsmError`s and recovering a lost session once."""
    assert_hsm_thread()
    if login.users <= 0:
        raise HsmUnavailable("this HSM handle is closed")
    for attempt in (1, 2):
        try:
            if login.session is None or login.generation != _generations.get(login.settings.module):
                login.connect()
            return fn(login, *args)
        except HsmError:
            raise
        except _STALE_HANDLE as exc:
            if attempt == 2:
                raise HsmUnavailable(f"{operation}: key handles keep going stale ({type(exc).__name__})") from exc
            login.forget_keys()
        except _SESSION_LOST as exc:
            if attempt == 2:
                raise HsmUnavailable(f"{operation}: the token is unusable ({type(exc).__name__})") from exc
            login.recover(exc)
        except p11err.PKCS11Error as exc:
            raise HsmError(f"{operation} failed ({type(exc).__name__})") from exc
    raise AssertionError("unreachable")


# Key lookups ---------------------------------------------------------------------------------------------


def _token_keys(session: Session, label: str) -> list[Object]:
    return list(
        session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label, Attribute.TOKEN: True})
    )


def _one_token_key(session: Session, label: str) -> Object:
    found = _token_keys(session, label)
    if not found:
        raise KeyNotFound(f"no key labelled {label!r} in the token")
    if len(found) > 1:
        raise HsmError(f"several keys labelled {label!r} in the token")
    return found[0]


def _storage_kek(login: Login, label: str, unwrap: Mapping[int, TemplateValue]) -> Object:
    """Find a storage KEK once per login and refuse one that lacks its protections."""
    kek = login.storage.get(label)
    if kek is not None:
        return kek
    session = login.live
    kek = _one_token_key(session, label)
    attrs = kek.get_attributes([Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.MODIFIABLE])
    enforced = cryptoki(login.settings.module).get_template_attribute(
        _handle(session), _object_handle(kek), Attribute.UNWRAP_TEMPLATE
    )
    expected = {int(kind): b"\x01" if value else b"\x00" for kind, value in unwrap.items()}
    if (
        attrs.get(Attribute.SENSITIVE) is not True
        or attrs.get(Attribute.EXTRACTABLE) is not False
        or attrs.get(Attribute.MODIFIABLE) is not False
        or enforced != expected
        or not isinstance(kek, UnwrapMixin)
        or not isinstance(kek, WrapMixin)
    ):
        raise HsmError(f"storage KEK {label!r} lacks its protections (unwrap template, non-modifiable)")
    login.storage[label] = kek
    return kek


def root_kek(login: Login, group: str) -> Object:
    return _storage_kek(login, storage_kek_label(group), _ROOT_UNWRAP_TEMPLATE)


def session_store_kek(login: Login, group: str) -> Object:
    return _storage_kek(login, session_store_kek_label(group), _SESSION_UNWRAP_TEMPLATE)


def transport_kek(login: Login, label: str) -> Object:
    """The session copy of a transport KEK, made on first use (token objects are slow, docs/pkcs11.md §2)."""
    copy = login.transport.get(label)
    if copy is None:
        original = _one_token_key(login.live, label)
        if not isinstance(original, WrapMixin):
            raise HsmError(f"key {label!r} is not a wrapping key")
        copy = original.copy(_SESSION_COPY)
        login.transport[label] = copy
    return copy


def _handle(session: Session) -> int:
    handle: int = session.handle  # type: ignore[attr-defined]  # the Cython Session has it, the stub not
    return handle


def _object_handle(obj: Object) -> int:
    handle = obj.handle
    if handle is None:
        raise HsmError("a token object has no handle")
    return handle


# Primitives ----------------------------------------------------------------------------------------------


def _unwrap(kek: Object, blob: bytes, template: Template, what: str) -> Object:
    if len(blob) != BLOB_LEN:
        raise InvalidKeyBlob(f"{what}: a key blob is {BLOB_LEN} bytes, got {len(blob)}")
    unwrap = cast(UnwrapMixin, kek).unwrap_key
    arguments: dict[str, Any] = {
        "mechanism": Mechanism.AES_KEY_WRAP,
        "capabilities": _NO_CAPABILITIES,
        "template": template,
    }
    try:
        try:
            return unwrap(ObjectClass.SECRET_KEY, KeyType.AES, blob, **arguments)
        except p11err.GeneralError:
            # SoftHSM2 reports a failed RFC 3394 integrity check as CKR_GENERAL_ERROR (docs/pkcs11.md §5.5), like a
            # broken token. A bad blob fails again; then, if the KEK still answers, it is the blob.
            return unwrap(ObjectClass.SECRET_KEY, KeyType.AES, blob, **arguments)
    except (p11err.WrappedKeyInvalid, p11err.WrappedKeyLenRange, p11err.EncryptedDataInvalid):
        raise InvalidKeyBlob(f"{what} does not unwrap") from None
    except p11err.GeneralError:
        kek[Attribute.KEY_TYPE]
        raise InvalidKeyBlob(f"{what} does not unwrap") from None


def _cmac4(key: Object, message: bytes) -> bytes:
    return cast(SignMixin, key).sign(message, mechanism=Mechanism.AES_CMAC)[:MIC_LEN]


def _check_mic(key: Object, message: bytes, mic: bytes) -> None:
    # C_Verify with a 4-byte tag always fails on SoftHSM2 (docs/pkcs11.md §5.6): compare the truncated CMAC ourselves.
    if not hmac.compare_digest(_cmac4(key, message), mic):
        raise MicMismatch("MIC mismatch")


def _wrap(kek: Object, key: Object) -> bytes:
    return cast(WrapMixin, kek).wrap_key(cast(Any, key), mechanism=Mechanism.AES_KEY_WRAP)


def _destroy_quietly(keys: Iterable[Object]) -> None:
    for key in keys:
        with contextlib.suppress(p11err.PKCS11Error):
            key.destroy()


@contextlib.contextmanager
def _scratch() -> Iterator[dict[str, Object]]:
    """Session objects put in the dict are destroyed on the way out (design step 6).

    On error the original exception wins; on success a failed destroy is raised, so a leak is noticed.
    """
    objects: dict[str, Object] = {}
    try:
        yield objects
    except BaseException:
        _destroy_quietly(objects.values())
        raise
    failure: p11err.PKCS11Error | None = None
    for key in objects.values():
        try:
            key.destroy()
        except p11err.PKCS11Error as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def _import_clear(session: Session, key: bytes) -> Object:
    return session.create_object({**_WRAPPABLE, Attribute.VALUE: key})


# Operations (each runs inside `run`) ---------------------------------------------------------------------


def ensure_storage_kek(login: Login, group: str) -> bool:
    session = login.live
    created = False
    for label, unwrap in (
        (storage_kek_label(group), _ROOT_UNWRAP_TEMPLATE),
        (session_store_kek_label(group), _SESSION_UNWRAP_TEMPLATE),
    ):
        if not _token_keys(session, label):
            cryptoki(login.settings.module).generate_key(
                _handle(session), Mechanism.AES_KEY_GEN, _storage_kek_template(label, unwrap)
            )
            log.info("created storage KEK %r", label)
            created = True
    root_kek(login, group)
    session_store_kek(login, group)
    return created


def import_root_key(login: Login, group: str, key: bytes) -> bytes:
    kek = root_kek(login, group)
    with _scratch() as scratch:
        scratch["clear"] = _import_clear(login.live, key)
        return _wrap(kek, scratch["clear"])


def generate_root_key(login: Login, group: str) -> tuple[bytes, bytes]:
    key = login.live.generate_random(128)
    return import_root_key(login, group, key), key


def import_kek(login: Login, label: str, key: bytes) -> None:
    session = login.live
    if _token_keys(session, label):
        raise KekExists(f"a key labelled {label!r} is already in the token")
    session.create_object({**_TRANSPORT_KEK, Attribute.LABEL: label, Attribute.VALUE: key})
    log.info("imported KEK %r", label)


def has_kek(login: Login, label: str) -> bool:
    return bool(_token_keys(login.live, label))


def generate_random(login: Login, nbytes: int) -> bytes:
    return login.live.generate_random(nbytes * 8)


def check_mic(login: Login, group: str, blob: bytes, message: bytes, mic: bytes) -> None:
    what = f"root key blob of group {group!r}"
    kek = root_kek(login, group)
    with _scratch() as scratch:
        scratch["root"] = _unwrap(kek, blob, _SIGN_ONLY_ROOT, what)
        _check_mic(scratch["root"], message, mic)


def rewrap(login: Login, group: str, blob: bytes, kek_label: str) -> bytes:
    kek = transport_kek(login, kek_label)
    store_kek = session_store_kek(login, group)
    with _scratch() as scratch:
        scratch["stored"] = _unwrap(store_kek, blob, _WRAPPABLE, f"stored key blob of group {group!r}")
        return _wrap(kek, scratch["stored"])


def run_join(login: Login, recipe: JoinRecipe) -> JoinOutput:
    """docs/design.md "join recipe": unwrap, derive, check, MIC, encrypt, wrap, destroy — one thread hop.

    The key handles come from python-pkcs11 (lookups, session copies); the calls themselves are raw
    PKCS#11 through ctypes (`_fastjoin`), at about half the CPU.
    """
    storage = root_kek(login, recipe.group)
    keks = {label: _object_handle(transport_kek(login, label)) for _slot, label in recipe.wraps}
    store_kek = _object_handle(session_store_kek(login, recipe.group)) if recipe.store else None
    return fast_join(login.settings.module).run(
        _handle(login.live),
        recipe,
        _object_handle(storage),
        keks,
        store_kek,
        lambda: storage[Attribute.KEY_TYPE],
    )


# Token bootstrap -----------------------------------------------------------------------------------------


def init_token(module: str, label: str, so_pin: Pin, user_pin: Pin) -> None:
    """Initialise a free slot's token and its user PIN, or finish a half-initialised one; idempotent."""
    assert_hsm_thread()
    lib = _library(module)
    try:
        existing: list[Token] = list(lib.get_tokens(token_label=label))
        if not existing:
            free = [
                slot
                for slot in lib.get_slots(token_present=True)
                if not slot.get_token().flags & TokenFlag.TOKEN_INITIALIZED
            ]
            if not free:
                raise HsmError(f"no free slot in {module} for token {label!r}")
            cryptoki(module).init_token(free[0].slot_id, so_pin, label)
            log.info("initialised token %r", label)
            existing = list(lib.get_tokens(token_label=label))
        token = existing[0]
        if not token.flags & TokenFlag.USER_PIN_INITIALIZED:
            session = token.open(rw=True)
            try:
                cryptoki(module).login(_handle(session), so_pin, security_officer=True)
                try:
                    session.init_pin(user_pin.reveal())
                finally:
                    cryptoki(module).logout(_handle(session))
            finally:
                _close_quietly(session)
    except _PIN_REJECTED as exc:
        raise HsmError(f"token {label!r}: a PIN was rejected ({type(exc).__name__})") from None
    except p11err.PKCS11Error as exc:
        raise HsmError(f"cannot initialise token {label!r} ({type(exc).__name__})") from exc


# Ownership workflow: exportable-once ASTKs and secure-element root keys ---------------------------------

# A generated ASTK is readable until its one export, then locked (SENSITIVE and EXTRACTABLE may only ever
# be tightened, PKCS#11 §4.4), so no later call can read it again.
_EXPORTABLE_ASTK: Final[Template] = {**_TRANSPORT_KEK, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
_LOT_MASTER_KEY: Final[Template] = {
    **_NO_USAGE,
    Attribute.TOKEN: True,
    Attribute.EXTRACTABLE: False,
    Attribute.DERIVE: True,
    Attribute.MODIFIABLE: False,
    Attribute.COPYABLE: False,
}


def generate_exportable_kek(login: Login, label: str) -> None:
    session = login.live
    if _token_keys(session, label):
        raise KekExists(f"a key labelled {label!r} is already in the token")
    value = session.generate_random(128)
    session.create_object({**_EXPORTABLE_ASTK, Attribute.LABEL: label, Attribute.VALUE: value})
    log.info("generated exportable KEK %r", label)


def export_kek_once(login: Login, label: str) -> bytes:
    key = _one_token_key(login.live, label)
    attrs = key.get_attributes([Attribute.SENSITIVE, Attribute.EXTRACTABLE])
    if attrs.get(Attribute.SENSITIVE) is not False or attrs.get(Attribute.EXTRACTABLE) is not True:
        raise KeyNotExportable(f"key {label!r} cannot be exported (imported, or exported before)")
    value = bytes(key[Attribute.VALUE])
    key[Attribute.SENSITIVE] = True
    key[Attribute.EXTRACTABLE] = False
    log.info("exported KEK %r once; it is locked now", label)
    return value


def import_lot_master_key(login: Login, label: str, key: bytes) -> None:
    session = login.live
    if _token_keys(session, label):
        raise KekExists(f"a key labelled {label!r} is already in the token")
    session.create_object({**_LOT_MASTER_KEY, Attribute.LABEL: label, Attribute.VALUE: key})
    log.info("imported lot master key %r", label)


def derive_root_key(login: Login, group: str, master_label: str, block: bytes) -> bytes:
    """``AES-ECB(master, block)`` as a key inside the token, returned wrapped under the group's storage KEK."""
    kek = root_kek(login, group)
    master = _one_token_key(login.live, master_label)
    with _scratch() as scratch:
        scratch["derived"] = cast(Any, master).derive_key(
            KeyType.AES,
            128,
            mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
            mechanism_param=block,
            capabilities=_NO_CAPABILITIES,
            template=_WRAPPABLE,
        )
        return _wrap(kek, scratch["derived"])
