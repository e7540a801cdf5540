"""Raw PKCS#11 through ctypes, for what python-pkcs11 0.10.1 cannot express.

- ``C_InitToken``: python-pkcs11 has no token initialisation, and `softhsm2-util` would need the PINs on
  its command line;
- ``C_GenerateKey`` with ``CKA_UNWRAP_TEMPLATE``: an array attribute, which python-pkcs11 cannot pack;
- reading ``CKA_UNWRAP_TEMPLATE`` back, to refuse a storage KEK that lacks it.

`ctypes.CDLL` on the path python-pkcs11 loaded returns the same dlopen handle, so these calls share the
initialised module and its session handles. Like every PKCS#11 call they run in the jsd-hsm thread only.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeAlias

import pkcs11.exceptions as p11err

from jsd.hsm._thread import assert_hsm_thread
from jsd.hsm.config import Pin

__all__ = ["Cryptoki", "TemplateValue", "cryptoki"]

CK_ULONG = ctypes.c_ulong
CK_BBOOL = ctypes.c_ubyte
_UNAVAILABLE: Final = CK_ULONG(-1).value
_CKU_SO: Final = 0
_CKU_USER: Final = 1

# CK_FUNCTION_LIST order, PKCS#11 v2.40 §5.
_FUNCTIONS: Final = (  # noqa: SIM905 - 68 names read better as text than as a 68-line tuple
    "Initialize Finalize GetInfo GetFunctionList GetSlotList GetSlotInfo GetTokenInfo GetMechanismList "
    "GetMechanismInfo InitToken InitPIN SetPIN OpenSession CloseSession CloseAllSessions GetSessionInfo "
    "GetOperationState SetOperationState Login Logout CreateObject CopyObject DestroyObject "
    "GetObjectSize GetAttributeValue SetAttributeValue FindObjectsInit FindObjects FindObjectsFinal "
    "EncryptInit Encrypt EncryptUpdate EncryptFinal DecryptInit Decrypt DecryptUpdate DecryptFinal "
    "DigestInit Digest DigestUpdate DigestKey DigestFinal SignInit Sign SignUpdate SignFinal "
    "SignRecoverInit SignRecover VerifyInit Verify VerifyUpdate VerifyFinal VerifyRecoverInit "
    "VerifyRecover DigestEncryptUpdate DecryptDigestUpdate SignEncryptUpdate DecryptVerifyUpdate "
    "GenerateKey GenerateKeyPair WrapKey UnwrapKey DeriveKey SeedRandom GenerateRandom GetFunctionStatus "
    "CancelFunction WaitForSlotEvent"
).split()


class _FunctionList(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)] + [
        (f"C_{name}", ctypes.c_void_p) for name in _FUNCTIONS
    ]


class _Attribute(ctypes.Structure):
    _fields_ = [("type", CK_ULONG), ("pValue", ctypes.c_void_p), ("ulValueLen", CK_ULONG)]


class _Mechanism(ctypes.Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", ctypes.c_void_p), ("ulParameterLen", CK_ULONG)]


_AttrArray: TypeAlias = "ctypes.Array[_Attribute]"
TemplateValue: TypeAlias = "bool | int | bytes | Mapping[int, TemplateValue]"

# Return codes we meet, mapped to python-pkcs11's exceptions so callers handle one family.
_ERRORS: Final[Mapping[int, type[p11err.PKCS11Error]]] = {
    0x002: p11err.HostMemory,
    0x003: p11err.SlotIDInvalid,
    0x005: p11err.GeneralError,
    0x006: p11err.FunctionFailed,
    0x007: p11err.ArgumentsBad,
    0x010: p11err.AttributeReadOnly,
    0x011: p11err.AttributeSensitive,
    0x012: p11err.AttributeTypeInvalid,
    0x013: p11err.AttributeValueInvalid,
    0x020: p11err.DataInvalid,
    0x021: p11err.DataLenRange,
    0x030: p11err.DeviceError,
    0x031: p11err.DeviceMemory,
    0x032: p11err.DeviceRemoved,
    0x040: p11err.EncryptedDataInvalid,
    0x041: p11err.EncryptedDataLenRange,
    0x060: p11err.KeyHandleInvalid,
    0x062: p11err.KeySizeRange,
    0x063: p11err.KeyTypeInconsistent,
    0x069: p11err.KeyNotWrappable,
    0x06A: p11err.KeyUnextractable,
    0x070: p11err.MechanismInvalid,
    0x071: p11err.MechanismParamInvalid,
    0x082: p11err.ObjectHandleInvalid,
    0x090: p11err.OperationActive,
    0x091: p11err.OperationNotInitialized,
    0x0A0: p11err.PinIncorrect,
    0x0A1: p11err.PinInvalid,
    0x0A2: p11err.PinLenRange,
    0x0A3: p11err.PinExpired,
    0x0A4: p11err.PinLocked,
    0x0B0: p11err.SessionClosed,
    0x0B3: p11err.SessionHandleInvalid,
    0x0B6: p11err.SessionExists,
    0x0C0: p11err.SignatureInvalid,
    0x0C1: p11err.SignatureLenRange,
    0x0D0: p11err.TemplateIncomplete,
    0x0D1: p11err.TemplateInconsistent,
    0x0E0: p11err.TokenNotPresent,
    0x0F0: p11err.UnwrappingKeyHandleInvalid,
    0x100: p11err.UserAlreadyLoggedIn,
    0x101: p11err.UserNotLoggedIn,
    0x102: p11err.UserPinNotInitialized,
    0x110: p11err.WrappedKeyInvalid,
    0x112: p11err.WrappedKeyLenRange,
    0x113: p11err.WrappingKeyHandleInvalid,
}


def _check(rv: int, call: str) -> None:
    if rv != 0:
        raise _ERRORS.get(rv, p11err.PKCS11Error)(f"{call} returned CKR 0x{rv:x}")


class _Template:
    """A CK_ATTRIBUTE array plus the buffers it points to (kept alive until the template is dropped)."""

    def __init__(self, attrs: Mapping[int, TemplateValue]) -> None:
        self._keep: list[object] = []
        self.array = self._build(attrs)

    def _build(self, attrs: Mapping[int, TemplateValue]) -> _AttrArray:
        array = (_Attribute * len(attrs))()
        for item, (kind, value) in zip(array, attrs.items(), strict=True):
            item.type = kind
            if isinstance(value, bool):
                scalar: ctypes._SimpleCData[int] = CK_BBOOL(value)
                item.pValue, item.ulValueLen = ctypes.addressof(scalar), ctypes.sizeof(scalar)
                self._keep.append(scalar)
            elif isinstance(value, int):
                scalar = CK_ULONG(value)
                item.pValue, item.ulValueLen = ctypes.addressof(scalar), ctypes.sizeof(scalar)
                self._keep.append(scalar)
            elif isinstance(value, bytes):
                buffer = ctypes.create_string_buffer(value, len(value))
                item.pValue, item.ulValueLen = ctypes.addressof(buffer), len(value)
                self._keep.append(buffer)
            else:
                nested = self._build(value)
                item.pValue, item.ulValueLen = ctypes.addressof(nested), ctypes.sizeof(nested)
        self._keep.append(array)
        return array


class Cryptoki:
    """Typed access to the handful of functions used from the module's CK_FUNCTION_LIST."""

    def __init__(self, module: str) -> None:
        self._dll = ctypes.CDLL(module)
        pointer = ctypes.POINTER(_FunctionList)()
        _check(self._dll.C_GetFunctionList(ctypes.byref(pointer)), "C_GetFunctionList")
        self._list = pointer.contents

    def _fn(self, name: str, *argtypes: type) -> Callable[..., int]:
        prototype = ctypes.CFUNCTYPE(CK_ULONG, *argtypes)
        function: Callable[..., int] = prototype(getattr(self._list, f"C_{name}"))
        return function

    def init_token(self, slot_id: int, so_pin: Pin, label: str) -> None:
        """C_InitToken: the SO PIN goes from a Pin straight into a buffer that is wiped afterwards."""
        assert_hsm_thread()
        encoded = label.encode("utf-8")
        if len(encoded) > 32:
            raise ValueError("a token label is at most 32 bytes")
        pin = ctypes.create_string_buffer(so_pin.reveal().encode("utf-8"))
        padded = ctypes.create_string_buffer(encoded.ljust(32, b" "), 32)
        init = self._fn("InitToken", CK_ULONG, ctypes.c_char_p, CK_ULONG, ctypes.c_char_p)
        try:
            _check(init(slot_id, pin, len(pin) - 1, padded), "C_InitToken")
        finally:
            ctypes.memset(pin, 0, len(pin))

    def login(self, session: int, pin: Pin, *, security_officer: bool = False) -> None:
        """C_Login on a session the caller opened, so a rejected PIN leaks no session (python-pkcs11 would)."""
        assert_hsm_thread()
        secret = ctypes.create_string_buffer(pin.reveal().encode("utf-8"))
        login = self._fn("Login", CK_ULONG, CK_ULONG, ctypes.c_char_p, CK_ULONG)
        user_type = _CKU_SO if security_officer else _CKU_USER
        try:
            _check(login(session, user_type, secret, len(secret) - 1), "C_Login")
        finally:
            ctypes.memset(secret, 0, len(secret))

    def logout(self, session: int) -> None:
        """C_Logout: logs every session of this application out of the token."""
        assert_hsm_thread()
        _check(self._fn("Logout", CK_ULONG)(session), "C_Logout")

    def generate_key(self, session: int, mechanism: int, attrs: Mapping[int, TemplateValue]) -> int:
        """C_GenerateKey with any template, array attributes included; returns the object handle."""
        assert_hsm_thread()
        template = _Template(attrs)
        mech = _Mechanism(mechanism, None, 0)
        handle = CK_ULONG()
        generate = self._fn(
            "GenerateKey",
            CK_ULONG,
            ctypes.POINTER(_Mechanism),
            ctypes.POINTER(_Attribute),
            CK_ULONG,
            ctypes.POINTER(CK_ULONG),
        )
        _check(
            generate(session, ctypes.byref(mech), template.array, len(template.array), ctypes.byref(handle)),
            "C_GenerateKey",
        )
        return handle.value

    def get_template_attribute(self, session: int, obj: int, kind: int) -> dict[int, bytes]:
        """Read an array attribute (e.g. CKA_UNWRAP_TEMPLATE) as {attribute: raw value}; {} if absent."""
        assert_hsm_thread()
        get = self._fn("GetAttributeValue", CK_ULONG, CK_ULONG, ctypes.POINTER(_Attribute), CK_ULONG)
        outer = _Attribute(kind, None, 0)
        rv = get(session, obj, ctypes.byref(outer), 1)
        if rv == 0x12 or outer.ulValueLen in (0, _UNAVAILABLE):
            return {}
        _check(rv, "C_GetAttributeValue")
        count = outer.ulValueLen // ctypes.sizeof(_Attribute)
        inner = (_Attribute * count)()
        outer.pValue = ctypes.addressof(inner)
        _check(get(session, obj, ctypes.byref(outer), 1), "C_GetAttributeValue")
        buffers = [ctypes.create_string_buffer(item.ulValueLen) for item in inner]
        for item, buffer in zip(inner, buffers, strict=True):
            item.pValue = ctypes.addressof(buffer)
        _check(get(session, obj, ctypes.byref(outer), 1), "C_GetAttributeValue")
        return {item.type: buffer.raw[: item.ulValueLen] for item, buffer in zip(inner, buffers, strict=True)}

    def get_attributes(self, session: int, obj: int, kinds: Iterable[int]) -> dict[int, bytes | None]:
        """Scalar attributes as raw bytes; None for a sensitive one (CKA_VALUE of a secret key), absent if unknown."""
        assert_hsm_thread()
        get = self._fn("GetAttributeValue", CK_ULONG, CK_ULONG, ctypes.POINTER(_Attribute), CK_ULONG)
        found: dict[int, bytes | None] = {}
        for kind in kinds:
            query = _Attribute(kind, None, 0)
            rv = get(session, obj, ctypes.byref(query), 1)
            if rv == 0x11:
                found[kind] = None
                continue
            if rv == 0x12:
                continue
            _check(rv, "C_GetAttributeValue")
            buffer = ctypes.create_string_buffer(max(query.ulValueLen, 1))
            query.pValue = ctypes.addressof(buffer)
            _check(get(session, obj, ctypes.byref(query), 1), "C_GetAttributeValue")
            found[kind] = buffer.raw[: query.ulValueLen]
        return found

    def close_session(self, session: int) -> None:
        """C_CloseSession on a handle, bypassing python-pkcs11 (which would log the whole token out)."""
        assert_hsm_thread()
        _check(self._fn("CloseSession", CK_ULONG)(session), "C_CloseSession")


_loaded: dict[str, Cryptoki] = {}


def cryptoki(module: str) -> Cryptoki:
    """One ctypes view per module path, like `pkcs11.lib`."""
    assert_hsm_thread()
    if module not in _loaded:
        _loaded[module] = Cryptoki(module)
    return _loaded[module]
