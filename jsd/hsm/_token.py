"""The token's login: one logged-in session per token and process, recovery, and token bootstrap.

Everything here runs in the jsd-hsm thread (`_thread.py`); `Hsm` is the only caller. The key operations
that run inside a login are in `_keys.py`; the PKCS#11 calls and templates in `cryptoki.py`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import pkcs11.exceptions as p11err

from jsd.hsm import cryptoki
from jsd.hsm._thread import assert_hsm_thread
from jsd.hsm.config import HsmSettings, Pin
from jsd.hsm.errors import HsmError, HsmUnavailable

log = logging.getLogger("jsd.hsm")

T = TypeVar("T")

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
# measured with two processes logging in while a third ran joins (the joins were unaffected). A half-written
# file can also read as a token without a user PIN (CKR_USER_PIN_NOT_INITIALIZED; seen with three processes
# logging in in a loop), so that too is tried again before it is believed.
_LOGIN_RACES: Final = (
    p11err.GeneralError,
    p11err.NoSuchToken,
    p11err.TokenNotRecognised,
    p11err.UserPinNotInitialized,
)
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
    Handles of storage KEKs and of transport KEK session copies are cached for the life of the session.
    """

    settings: HsmSettings
    lib: cryptoki.Cryptoki
    users: int = 0
    session: int | None = None
    generation: int = -1
    owns_login: bool = False
    storage: dict[str, int] = field(default_factory=dict)
    transport: dict[str, int] = field(default_factory=dict)
    operations: int = 0

    def __repr__(self) -> str:
        return f"Login(token={self.settings.token_label!r}, users={self.users})"

    @property
    def live(self) -> int:
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
                self.session, self.owns_login = _log_in(self.lib, label, self.settings.pin)
                self.generation = self.lib.generation
                return
            except _LOGIN_RACES as exc:
                if attempt == _CONNECT_ATTEMPTS:
                    if isinstance(exc, p11err.NoSuchToken):
                        raise HsmUnavailable(f"no token labelled {label!r} in {module}") from None
                    raise HsmUnavailable(f"cannot log in to token {label!r} ({type(exc).__name__})") from exc
                time.sleep((10 + secrets.randbelow(40)) * attempt / 1000)
                _reinitialize(self.lib, module)
            except _PIN_REJECTED as exc:
                raise HsmUnavailable(f"token {label!r} rejected the user PIN ({type(exc).__name__})") from None
            except p11err.MultipleTokensReturned:
                raise HsmUnavailable(f"several tokens labelled {label!r} in {module}") from None
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
        if session is None or self.generation != self.lib.generation:
            return
        for copy in copies:
            with contextlib.suppress(p11err.PKCS11Error):
                self.lib.destroy(session, copy)
        try:
            if self.owns_login:
                self.lib.logout(session)
        except p11err.PKCS11Error as exc:
            log.warning("logging out of token %r failed: %s", self.settings.token_label, type(exc).__name__)
        _close_quietly(self.lib, session)

    def renew(self) -> None:
        """Finalise and re-initialise the module, then log in again: between two operations, so nothing is in
        flight on this (the only PKCS#11) thread; other logins on the module see the new generation."""
        log.debug("re-initialising %s after %d operations (releases destroyed session objects)",
                 self.settings.module, self.operations)  # fmt: skip
        self.operations = 0
        _reinitialize(self.lib, self.settings.module)
        self.connect()

    def recover(self, cause: Exception) -> None:
        """docs/pkcs11.md §4: finalise and re-initialise the module, then log in again."""
        module = self.settings.module
        log.warning(
            "PKCS#11 session of token %r lost (%s): re-initialising %s",
            self.settings.token_label,
            type(cause).__name__,
            module,
        )
        _reinitialize(self.lib, module)
        self.connect()


def _log_in(lib: cryptoki.Cryptoki, label: str, pin: Pin) -> tuple[int, bool]:
    """A new session on the token, logged in; True if this call did the login (and must log out)."""
    session = lib.open_session(lib.find_token(label))
    try:
        lib.login(session, pin)
    except p11err.UserAlreadyLoggedIn:
        # Other code in this process logged in (login is per application): use it, never log it out.
        return session, False
    except BaseException:
        _close_quietly(lib, session)
        raise
    return session, True


def _reinitialize(lib: cryptoki.Cryptoki, module: str) -> None:
    """C_Finalize + C_Initialize: every session and session object of the module in this process is gone."""
    try:
        lib.reinitialize()
    except p11err.PKCS11Error as exc:
        raise HsmUnavailable(f"cannot re-initialise {module} ({type(exc).__name__})") from exc


def _close_quietly(lib: cryptoki.Cryptoki, session: int) -> None:
    with contextlib.suppress(p11err.PKCS11Error):
        lib.close_session(session)


_logins: dict[tuple[str, str], Login] = {}


def _library(module: str) -> cryptoki.Cryptoki:
    assert_hsm_thread()
    try:
        return cryptoki.library(module)
    except p11err.PKCS11Error as exc:
        raise HsmUnavailable(f"cannot load the PKCS#11 module {module} ({type(exc).__name__})") from exc


def acquire(settings: HsmSettings) -> Login:
    """Join the process-wide login of a token, logging in if nobody has."""
    assert_hsm_thread()
    key = (settings.module, settings.token_label)
    login = _logins.get(key)
    if login is not None:
        if login.settings.pin != settings.pin:
            raise HsmUnavailable(f"token {settings.token_label!r} is already open with another PIN")
    else:
        login = Login(settings, _library(settings.module))
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


def run(login: Login, operation: str, fn: Callable[..., T], *args: Any, weight: int = 1) -> T:
    """Run one operation, mapping PKCS#11 failures to `HsmError`s and recovering a lost session once.

    `weight` is what the operation counts towards `reinitialize_every`: a batch counts each of its keys, as
    SoftHSM2 keeps a destroyed session object per key until the renewal.
    """
    assert_hsm_thread()
    if login.users <= 0:
        raise HsmUnavailable("this HSM handle is closed")
    every = login.settings.reinitialize_every
    if every and login.operations >= every:
        login.renew()
    login.operations += weight
    for attempt in (1, 2):
        try:
            if login.session is None or login.generation != login.lib.generation:
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


def init_token(module: str, label: str, so_pin: Pin, user_pin: Pin) -> None:
    """Initialise a free slot's token and its user PIN, or finish a half-initialised one; idempotent."""
    lib = _library(module)
    try:
        existing = [(slot, flags) for slot, name, flags in lib.tokens() if name == label]
        if not existing:
            free = [slot for slot, _name, flags in lib.tokens() if not flags & cryptoki.TokenFlag.TOKEN_INITIALIZED]
            if not free:
                raise HsmError(f"no free slot in {module} for token {label!r}")
            lib.init_token(free[0], so_pin, label)
            log.info("initialised token %r", label)
            existing = [(slot, flags) for slot, name, flags in lib.tokens() if name == label]
        slot, flags = existing[0]
        if not flags & cryptoki.TokenFlag.USER_PIN_INITIALIZED:
            session = lib.open_session(slot)
            try:
                lib.login(session, so_pin, security_officer=True)
                try:
                    lib.init_pin(session, user_pin)
                finally:
                    lib.logout(session)
            finally:
                _close_quietly(lib, session)
    except _PIN_REJECTED as exc:
        raise HsmError(f"token {label!r}: a PIN was rejected ({type(exc).__name__})") from None
    except p11err.PKCS11Error as exc:
        raise HsmError(f"cannot initialise token {label!r} ({type(exc).__name__})") from exc
