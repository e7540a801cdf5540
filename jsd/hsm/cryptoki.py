"""The one way into PKCS#11: the module's function list through ctypes, and every key template jsd uses.

Management (tokens, logins, KEKs, imports) and the join hot path make the same raw calls through one
`Cryptoki` per module path, loaded and initialised once per process, so each template below is defined once
and reaches the token exactly as written. python-pkcs11 is no longer a call path: only its pure-Python
attribute and mechanism names and its exception classes are used (every failure is raised as one of them, so
callers handle one family), and the tests keep its object API as an independent PIN holder. It could not be
the one path: it has no ``C_InitToken``, cannot pack ``CKA_UNWRAP_TEMPLATE`` (an array attribute), and
spends most of a join in Python (a class built per key object, ``C_Sign``/``C_Decrypt``/``C_WrapKey`` called
twice to size outputs, docs/pkcs11.md §1).

Measured (``python bench/hsm_crypto.py --seconds 5 --processes 1``, CPU µs per join of the worker; the
code before this module, run with PYTHONPATH pointing at it, side by side with this one on the shared
2-core machine): 1.0 join 239-247 before, 241-243 after; 1.1 join 436 before, 435 after (other runs of
both 500-590, load 13-21). Management calls, one process, CPU µs per call: import_root_key 145 -> 108,
check_mic 172 -> 93, has_kek 110 -> 74 (python-pkcs11 before).

Every call runs in the jsd-hsm thread (`_thread.py`): ``C_Initialize(NULL)`` leaves SoftHSM2 without locks.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal, TypeAlias

import pkcs11.exceptions as p11err
from pkcs11.constants import Attribute, ObjectClass, TokenFlag
from pkcs11.mechanisms import KeyType, Mechanism

from jsd.hsm.config import Pin

__all__ = [
    "DERIVED",
    "EXPORTABLE_ASTK",
    "LOCKED_AFTER_EXPORT",
    "LOT_MASTER_KEY",
    "ROOT_UNWRAP",
    "SESSION_COPY",
    "SESSION_UNWRAP",
    "TRANSPORT_KEK",
    "WRAPPABLE",
    "Cryptoki",
    "Template",
    "TemplateValue",
    "TokenFlag",
    "encode",
    "library",
    "loaded",
    "root_key",
    "storage_kek",
]

CK_ULONG = ctypes.c_ulong
CK_BBOOL = ctypes.c_ubyte
_P = ctypes.POINTER
_UNAVAILABLE: Final = CK_ULONG(-1).value
_CKU_SO: Final = 0
_CKU_USER: Final = 1
_RW_SERIAL_SESSION: Final = 0x2 | 0x4
_NOT_INITIALIZED: Final = 0x190
_ALREADY_INITIALIZED: Final = 0x191
_SENSITIVE: Final = 0x011
_TYPE_INVALID: Final = 0x012
_BLOCK: Final = 16
MIC_LEN: Final = 4

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


class _KeyDerivationString(ctypes.Structure):
    _fields_ = [("pData", ctypes.c_void_p), ("ulLen", CK_ULONG)]


_TOKEN_COUNTS: Final = (  # noqa: SIM905 - the ten CK_ULONG counters of CK_TOKEN_INFO, in order
    "MaxSessionCount SessionCount MaxRwSessionCount RwSessionCount MaxPinLen MinPinLen "
    "TotalPublicMemory FreePublicMemory TotalPrivateMemory FreePrivateMemory"
).split()


class _TokenInfo(ctypes.Structure):
    _fields_ = [
        ("label", ctypes.c_ubyte * 32),
        ("manufacturer", ctypes.c_ubyte * 32),
        ("model", ctypes.c_ubyte * 16),
        ("serial", ctypes.c_ubyte * 16),
        ("flags", CK_ULONG),
        *((f"ul{name}", CK_ULONG) for name in _TOKEN_COUNTS),
        ("hardware", ctypes.c_ubyte * 2),
        ("firmware", ctypes.c_ubyte * 2),
        ("time", ctypes.c_ubyte * 16),
    ]


_SESSION, _OBJECT, _ULONG_P, _MECH_P, _ATTR_P = CK_ULONG, CK_ULONG, _P(CK_ULONG), _P(_Mechanism), _P(_Attribute)
_BYTES = ctypes.c_char_p
# The argument types of every function jsd calls; each is bound once per module.
_SIGNATURES: Final[Mapping[str, tuple[Any, ...]]] = {
    "Initialize": (ctypes.c_void_p,),
    "Finalize": (ctypes.c_void_p,),
    "GetSlotList": (CK_BBOOL, _ULONG_P, _ULONG_P),
    "GetTokenInfo": (CK_ULONG, _P(_TokenInfo)),
    "InitToken": (CK_ULONG, _BYTES, CK_ULONG, _BYTES),
    "InitPIN": (_SESSION, _BYTES, CK_ULONG),
    "OpenSession": (CK_ULONG, CK_ULONG, ctypes.c_void_p, ctypes.c_void_p, _ULONG_P),
    "CloseSession": (_SESSION,),
    "Login": (_SESSION, CK_ULONG, _BYTES, CK_ULONG),
    "Logout": (_SESSION,),
    "CreateObject": (_SESSION, _ATTR_P, CK_ULONG, _ULONG_P),
    "CopyObject": (_SESSION, _OBJECT, _ATTR_P, CK_ULONG, _ULONG_P),
    "DestroyObject": (_SESSION, _OBJECT),
    "GetAttributeValue": (_SESSION, _OBJECT, _ATTR_P, CK_ULONG),
    "SetAttributeValue": (_SESSION, _OBJECT, _ATTR_P, CK_ULONG),
    "FindObjectsInit": (_SESSION, _ATTR_P, CK_ULONG),
    "FindObjects": (_SESSION, _ULONG_P, CK_ULONG, _ULONG_P),
    "FindObjectsFinal": (_SESSION,),
    "DecryptInit": (_SESSION, _MECH_P, _OBJECT),
    "Decrypt": (_SESSION, _BYTES, CK_ULONG, _BYTES, _ULONG_P),
    "SignInit": (_SESSION, _MECH_P, _OBJECT),
    "Sign": (_SESSION, _BYTES, CK_ULONG, _BYTES, _ULONG_P),
    "GenerateKey": (_SESSION, _MECH_P, _ATTR_P, CK_ULONG, _ULONG_P),
    "WrapKey": (_SESSION, _MECH_P, _OBJECT, _OBJECT, _BYTES, _ULONG_P),
    "UnwrapKey": (_SESSION, _MECH_P, _OBJECT, _BYTES, CK_ULONG, _ATTR_P, CK_ULONG, _ULONG_P),
    "DeriveKey": (_SESSION, _MECH_P, _OBJECT, _ATTR_P, CK_ULONG, _ULONG_P),
    "GenerateRandom": (_SESSION, _BYTES, CK_ULONG),
}

# Return codes we meet (hex CKR value: python-pkcs11 exception class), so callers handle one family.
_ERRORS: Final[Mapping[int, type[p11err.PKCS11Error]]] = {
    int(code, 16): getattr(p11err, name)
    for code, name in (
        item.split(":")
        for item in (
            "002:HostMemory 003:SlotIDInvalid 005:GeneralError 006:FunctionFailed 007:ArgumentsBad "
            "010:AttributeReadOnly 011:AttributeSensitive 012:AttributeTypeInvalid 013:AttributeValueInvalid "
            "020:DataInvalid 021:DataLenRange 030:DeviceError 031:DeviceMemory 032:DeviceRemoved "
            "040:EncryptedDataInvalid 041:EncryptedDataLenRange 060:KeyHandleInvalid 062:KeySizeRange "
            "063:KeyTypeInconsistent 069:KeyNotWrappable 06a:KeyUnextractable 070:MechanismInvalid "
            "071:MechanismParamInvalid 082:ObjectHandleInvalid 090:OperationActive 091:OperationNotInitialized "
            "0a0:PinIncorrect 0a1:PinInvalid 0a2:PinLenRange 0a3:PinExpired 0a4:PinLocked 0b0:SessionClosed "
            "0b3:SessionHandleInvalid 0b6:SessionExists 0c0:SignatureInvalid 0c1:SignatureLenRange "
            "0d0:TemplateIncomplete 0d1:TemplateInconsistent 0e0:TokenNotPresent 0e1:TokenNotRecognised "
            "0f0:UnwrappingKeyHandleInvalid 100:UserAlreadyLoggedIn 101:UserNotLoggedIn 102:UserPinNotInitialized "
            "110:WrappedKeyInvalid 112:WrappedKeyLenRange 113:WrappingKeyHandleInvalid"
        ).split()
    )
}


def _check(rv: int, call: str) -> None:
    if rv != 0:
        raise _ERRORS.get(rv, p11err.PKCS11Error)(f"{call} returned CKR 0x{rv:x}")


# Templates -------------------------------------------------------------------------------------------------

TemplateValue: TypeAlias = "bool | int | bytes | Mapping[int, TemplateValue]"


def encode(value: bool | int | bytes) -> bytes:
    """An attribute value as the token stores it (what C_GetAttributeValue returns)."""
    if isinstance(value, bool):
        return bytes(CK_BBOOL(value))
    if isinstance(value, int):
        return bytes(CK_ULONG(value))
    return value


class Template:
    """One attribute set: the mapping (python-pkcs11 spelling, for reading) and the CK_ATTRIBUTE array.

    The array and the buffers it points to are built once and live as long as the template.
    """

    __slots__ = ("_keep", "array", "attrs", "count")

    def __init__(self, attrs: Mapping[int, TemplateValue]) -> None:
        self.attrs: Mapping[int, TemplateValue] = dict(attrs)
        self._keep: list[object] = []
        self.array = self._build(self.attrs)
        self.count = len(self.attrs)

    def encoded(self, kinds: Iterable[int] | None = None) -> dict[int, bytes]:
        """Scalar attributes as C_GetAttributeValue returns them, to compare with what the token reports."""
        picked = self.attrs if kinds is None else {kind: self.attrs[kind] for kind in kinds}
        return {kind: encode(value) for kind, value in picked.items() if not isinstance(value, Mapping)}

    def __or__(self, more: Mapping[int, TemplateValue]) -> Template:
        return Template({**self.attrs, **more})

    def value_buffer(self, kind: int) -> ctypes.Array[ctypes.c_char]:
        """The buffer of one scalar attribute, to rewrite in place (same length): one array for many objects."""
        for item in self.array:
            if item.type == kind:
                buffer: ctypes.Array[ctypes.c_char] = (ctypes.c_char * item.ulValueLen).from_address(item.pValue)
                return buffer
        raise KeyError(kind)

    def _build(self, attrs: Mapping[int, TemplateValue]) -> ctypes.Array[_Attribute]:
        array = (_Attribute * len(attrs))()
        for item, (kind, value) in zip(array, attrs.items(), strict=True):
            item.type = int(kind)
            if isinstance(value, Mapping):
                nested = self._build(value)
                item.pValue, item.ulValueLen = ctypes.addressof(nested), ctypes.sizeof(nested)
                continue
            raw = encode(value)
            buffer = ctypes.create_string_buffer(raw, len(raw))
            item.pValue, item.ulValueLen = ctypes.addressof(buffer), len(raw)
            self._keep.append(buffer)
        self._keep.append(array)
        return array


# Key objects (docs/design.md "jsd.hsm: keys in the token", docs/pkcs11.md §5.10). Every session key starts
# from _NO_USAGE: sensitive, private, and no capability at all unless its template turns one on.
_NO_USAGE: Final[Mapping[int, TemplateValue]] = {
    Attribute.CLASS: ObjectClass.SECRET_KEY,
    Attribute.KEY_TYPE: KeyType.AES,
    Attribute.TOKEN: False,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}
# What the storage KEKs force on every key unwrapped under them. Root keys: non-extractable, so a PIN holder
# with a DB blob cannot unwrap it extractable and re-wrap it under their own KEK. Stored session keys: only
# sensitive, because an AppSKey kept for AppSKeyReq must be re-wrapped for an AS later; a root blob does not
# unwrap under that second KEK (RFC 3394 integrity check), so root keys never leave through a rewrap.
ROOT_UNWRAP: Final[Mapping[int, TemplateValue]] = {Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True}
SESSION_UNWRAP: Final[Mapping[int, TemplateValue]] = {Attribute.SENSITIVE: True}


def storage_kek(label: str, unwrap: Mapping[int, TemplateValue]) -> Template:
    """A storage KEK (AES-256 from the token's generator): wrap/unwrap only, with its unwrap template.

    ``MODIFIABLE=False``: on a modifiable KEK a PIN holder could set ``CKA_DECRYPT`` and undo RFC 3394 in
    software. SoftHSM2 2.6.1 refuses to copy such an object into a session object, so it is used as a token
    object and is ``COPYABLE=False`` too.
    """
    return Template(
        {
            **_NO_USAGE,
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
    )


# A clear key on its way into a blob, and a stored session key on its way to an AS: wrappable, nothing else.
WRAPPABLE: Final = Template({**_NO_USAGE, Attribute.EXTRACTABLE: True})
# Transport KEKs (NS KEKs, ASTKs): imported token objects, WRAP only, modifiable and copyable so that each
# process copies them once into a non-modifiable session object (token objects are slow, docs/pkcs11.md §2).
# The copy lives as long as the login: a KEK deleted from the token works in a running daemon until it restarts.
TRANSPORT_KEK: Final = Template(
    {
        **_NO_USAGE,
        Attribute.TOKEN: True,
        Attribute.EXTRACTABLE: False,
        Attribute.WRAP: True,
        Attribute.MODIFIABLE: True,
        Attribute.COPYABLE: True,
    }
)
SESSION_COPY: Final = Template({Attribute.TOKEN: False, Attribute.MODIFIABLE: False})
# A generated ASTK is readable until its one export, then locked (SENSITIVE and EXTRACTABLE may only ever
# be tightened, PKCS#11 §4.4), so no later call can read it again.
EXPORTABLE_ASTK: Final = TRANSPORT_KEK | {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
LOCKED_AFTER_EXPORT: Final = Template({Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
LOT_MASTER_KEY: Final = Template(
    {
        **_NO_USAGE,
        Attribute.TOKEN: True,
        Attribute.EXTRACTABLE: False,
        Attribute.DERIVE: True,
        Attribute.MODIFIABLE: False,
        Attribute.COPYABLE: False,
    }
)
# Keys derived in a join: session keys wrappable, the MIC and encryption keys one usage each.
DERIVED: Final[Mapping[Literal["session", "mic", "enc"], Template]] = {
    "session": WRAPPABLE | {Attribute.VALUE_LEN: 16},
    "mic": Template({**_NO_USAGE, Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.VALUE_LEN: 16}),
    "enc": Template({**_NO_USAGE, Attribute.EXTRACTABLE: False, Attribute.DECRYPT: True, Attribute.VALUE_LEN: 16}),
}
_USAGE_ATTR: Final = {"sign": Attribute.SIGN, "decrypt": Attribute.DECRYPT, "derive": Attribute.DERIVE}
_ROOTS: dict[frozenset[str], Template] = {}


def root_key(usage: frozenset[Literal["sign", "decrypt", "derive"]]) -> Template:
    """An unwrapped root key with exactly these usages; EXTRACTABLE and SENSITIVE stated, as ROOT_UNWRAP demands."""
    template = _ROOTS.get(usage)
    if template is None:
        template = _ROOTS[usage] = Template(
            {**_NO_USAGE, Attribute.EXTRACTABLE: False, **{_USAGE_ATTR[use]: True for use in usage}}
        )
    return template


_KEY_GEN: Final = _Mechanism(int(Mechanism.AES_KEY_GEN), None, 0)
_KEY_WRAP: Final = _Mechanism(int(Mechanism.AES_KEY_WRAP), None, 0)
_CMAC: Final = _Mechanism(int(Mechanism.AES_CMAC), None, 0)
_ECB: Final = _Mechanism(int(Mechanism.AES_ECB), None, 0)
_ECB_DERIVE: Final = int(Mechanism.AES_ECB_ENCRYPT_DATA)
_BLOB_LEN: Final = 24


# The module ------------------------------------------------------------------------------------------------


class Cryptoki:
    """The PKCS#11 functions jsd uses from one module's CK_FUNCTION_LIST, bound once; handles are plain ints."""

    def __init__(self, module: str) -> None:
        try:
            dll = ctypes.CDLL(module)
        except OSError as exc:
            raise p11err.PKCS11Error(f"cannot load {module}: {exc}") from None
        pointer = _P(_FunctionList)()
        _check(dll.C_GetFunctionList(ctypes.byref(pointer)), "C_GetFunctionList")
        table = pointer.contents
        self._c: dict[str, Callable[..., int]] = {
            name: ctypes.CFUNCTYPE(CK_ULONG, *argtypes)(getattr(table, f"C_{name}"))
            for name, argtypes in _SIGNATURES.items()
        }
        self.generation = 0
        self._initialize()

    def _initialize(self) -> None:
        """``C_Initialize(NULL)``; already initialised is fine (python-pkcs11 in the same process, e.g. tests)."""
        rv = self._c["Initialize"](None)
        if rv != _ALREADY_INITIALIZED:
            _check(rv, "C_Initialize")

    def reinitialize(self) -> None:
        """C_Finalize + C_Initialize: every session and session object of this process is gone (docs/pkcs11.md §4)."""
        rv = self._c["Finalize"](None)
        if rv != _NOT_INITIALIZED:
            _check(rv, "C_Finalize")
        self.generation += 1
        self._initialize()

    # Slots, tokens, sessions

    def tokens(self) -> list[tuple[int, str, TokenFlag]]:
        """(slot, label, flags) of every present token; a slot whose token vanishes meanwhile is skipped."""
        count = CK_ULONG()
        _check(self._c["GetSlotList"](True, None, ctypes.byref(count)), "C_GetSlotList")
        slots = (CK_ULONG * count.value)()
        _check(self._c["GetSlotList"](True, slots, ctypes.byref(count)), "C_GetSlotList")
        found = []
        for slot in slots[: count.value]:
            info = _TokenInfo()
            try:
                _check(self._c["GetTokenInfo"](slot, ctypes.byref(info)), "C_GetTokenInfo")
            except (p11err.TokenNotPresent, p11err.TokenNotRecognised):
                continue
            label = bytes(info.label).decode("utf-8", errors="replace").rstrip(" \0")
            found.append((int(slot), label, TokenFlag(info.flags)))
        return found

    def find_token(self, label: str) -> int:
        """The slot of the one token with this label (NoSuchToken / MultipleTokensReturned otherwise)."""
        slots = [slot for slot, name, _flags in self.tokens() if name == label]
        if not slots:
            raise p11err.NoSuchToken(f"no token labelled {label!r}")
        if len(slots) > 1:
            raise p11err.MultipleTokensReturned(f"several tokens labelled {label!r}")
        return slots[0]

    def open_session(self, slot: int) -> int:
        """A read-write session on the slot's token, not logged in."""
        handle = CK_ULONG()
        _check(self._c["OpenSession"](slot, _RW_SERIAL_SESSION, None, None, ctypes.byref(handle)), "C_OpenSession")
        return handle.value

    def close_session(self, session: int) -> None:
        _check(self._c["CloseSession"](session), "C_CloseSession")

    def _with_secret(self, call: str, secret: str, fn: Callable[[ctypes.Array[ctypes.c_char], int], int]) -> None:
        """Run ``fn(buffer, length)`` on a PIN in a buffer that is wiped afterwards."""
        buffer = ctypes.create_string_buffer(secret.encode("utf-8"))
        try:
            _check(fn(buffer, len(buffer) - 1), call)
        finally:
            ctypes.memset(buffer, 0, len(buffer))

    def init_token(self, slot: int, so_pin: Pin, label: str) -> None:
        """C_InitToken: the SO PIN goes from a Pin straight into a wiped buffer (never on a command line)."""
        encoded = label.encode("utf-8")
        if len(encoded) > 32:
            raise ValueError("a token label is at most 32 bytes")
        padded = ctypes.create_string_buffer(encoded.ljust(32, b" "), 32)
        self._with_secret(
            "C_InitToken", so_pin.reveal(), lambda pin, size: self._c["InitToken"](slot, pin, size, padded)
        )

    def init_pin(self, session: int, user_pin: Pin) -> None:
        """C_InitPIN on a session logged in as security officer."""
        self._with_secret("C_InitPIN", user_pin.reveal(), lambda pin, size: self._c["InitPIN"](session, pin, size))

    def login(self, session: int, pin: Pin, *, security_officer: bool = False) -> None:
        """C_Login on a session the caller opened (and closes if the PIN is rejected)."""
        user = _CKU_SO if security_officer else _CKU_USER
        self._with_secret("C_Login", pin.reveal(), lambda secret, size: self._c["Login"](session, user, secret, size))

    def logout(self, session: int) -> None:
        """C_Logout: logs every session of this application out of the token."""
        _check(self._c["Logout"](session), "C_Logout")

    def generate_random(self, session: int, nbytes: int) -> bytes:
        out = ctypes.create_string_buffer(nbytes)
        _check(self._c["GenerateRandom"](session, out, nbytes), "C_GenerateRandom")
        return out.raw

    # Objects

    def find(self, session: int, template: Template) -> list[int]:
        """Handles of every object matching the template (batches until the token returns none)."""
        _check(self._c["FindObjectsInit"](session, template.array, template.count), "C_FindObjectsInit")
        found: list[int] = []
        batch, count = (CK_ULONG * 16)(), CK_ULONG()
        try:
            while True:
                _check(self._c["FindObjects"](session, batch, 16, ctypes.byref(count)), "C_FindObjects")
                if count.value == 0:
                    break
                found.extend(batch[: count.value])
        except BaseException:
            self._c["FindObjectsFinal"](session)
            raise
        _check(self._c["FindObjectsFinal"](session), "C_FindObjectsFinal")
        return found

    def create_object(self, session: int, template: Template) -> int:
        handle = CK_ULONG()
        _check(self._c["CreateObject"](session, template.array, template.count, ctypes.byref(handle)), "C_CreateObject")
        return handle.value

    def copy_object(self, session: int, obj: int, template: Template) -> int:
        handle = CK_ULONG()
        _check(
            self._c["CopyObject"](session, obj, template.array, template.count, ctypes.byref(handle)), "C_CopyObject"
        )
        return handle.value

    def generate_key(self, session: int, template: Template) -> int:
        """C_GenerateKey (AES) with any template, array attributes included; returns the object handle."""
        handle = CK_ULONG()
        rv = self._c["GenerateKey"](
            session, ctypes.byref(_KEY_GEN), template.array, template.count, ctypes.byref(handle)
        )
        _check(rv, "C_GenerateKey")
        return handle.value

    def destroy(self, session: int, obj: int) -> None:
        _check(self._c["DestroyObject"](session, obj), "C_DestroyObject")

    def set_attributes(self, session: int, obj: int, template: Template) -> None:
        _check(self._c["SetAttributeValue"](session, obj, template.array, template.count), "C_SetAttributeValue")

    def get_attributes(self, session: int, obj: int, kinds: Iterable[int]) -> dict[int, bytes | None]:
        """Scalar attributes as raw bytes; None for a sensitive one (CKA_VALUE of a secret key), absent if unknown."""
        get = self._c["GetAttributeValue"]
        found: dict[int, bytes | None] = {}
        for kind in kinds:
            query = _Attribute(kind, None, 0)
            rv = get(session, obj, ctypes.byref(query), 1)
            if rv == _SENSITIVE:
                found[kind] = None
                continue
            if rv == _TYPE_INVALID:
                continue
            _check(rv, "C_GetAttributeValue")
            buffer = ctypes.create_string_buffer(max(query.ulValueLen, 1))
            query.pValue = ctypes.addressof(buffer)
            _check(get(session, obj, ctypes.byref(query), 1), "C_GetAttributeValue")
            found[kind] = buffer.raw[: query.ulValueLen]
        return found

    def get_template_attribute(self, session: int, obj: int, kind: int) -> dict[int, bytes]:
        """Read an array attribute (e.g. CKA_UNWRAP_TEMPLATE) as {attribute: raw value}; {} if absent."""
        get = self._c["GetAttributeValue"]
        outer = _Attribute(kind, None, 0)
        rv = get(session, obj, ctypes.byref(outer), 1)
        if rv == _TYPE_INVALID or outer.ulValueLen in (0, _UNAVAILABLE):
            return {}
        _check(rv, "C_GetAttributeValue")
        inner = (_Attribute * (outer.ulValueLen // ctypes.sizeof(_Attribute)))()
        outer.pValue = ctypes.addressof(inner)
        _check(get(session, obj, ctypes.byref(outer), 1), "C_GetAttributeValue")
        buffers = [ctypes.create_string_buffer(item.ulValueLen) for item in inner]
        for item, buffer in zip(inner, buffers, strict=True):
            item.pValue = ctypes.addressof(buffer)
        _check(get(session, obj, ctypes.byref(outer), 1), "C_GetAttributeValue")
        return {item.type: buffer.raw[: item.ulValueLen] for item, buffer in zip(inner, buffers, strict=True)}

    # Key operations: every output has a known size, so each is one call (python-pkcs11 makes two).

    def unwrap(self, session: int, kek: int, blob: bytes, template: Template) -> int:
        """C_UnwrapKey with CKM_AES_KEY_WRAP (RFC 3394)."""
        handle = CK_ULONG()
        rv = self._c["UnwrapKey"](
            session, ctypes.byref(_KEY_WRAP), kek, blob, len(blob), template.array, template.count, ctypes.byref(handle)
        )
        _check(rv, "C_UnwrapKey")
        return handle.value

    def wrap(self, session: int, kek: int, key: int) -> bytes:
        """C_WrapKey with CKM_AES_KEY_WRAP: a 16-byte key becomes a 24-byte blob."""
        out, size = ctypes.create_string_buffer(_BLOB_LEN), CK_ULONG(_BLOB_LEN)
        _check(self._c["WrapKey"](session, ctypes.byref(_KEY_WRAP), kek, key, out, ctypes.byref(size)), "C_WrapKey")
        return out.raw[: size.value]

    def derive_ecb(self, session: int, parent: int, block: bytes, template: Template) -> int:
        """CKM_AES_ECB_ENCRYPT_DATA: a key whose value is AES-ECB(parent, block), made in the token."""
        data = ctypes.create_string_buffer(block, len(block))
        param = _KeyDerivationString(ctypes.addressof(data), len(block))
        mech = _Mechanism(_ECB_DERIVE, ctypes.addressof(param), ctypes.sizeof(param))
        handle = CK_ULONG()
        rv = self._c["DeriveKey"](
            session, ctypes.byref(mech), parent, template.array, template.count, ctypes.byref(handle)
        )
        _check(rv, "C_DeriveKey")
        return handle.value

    def cmac4(self, session: int, key: int, message: bytes) -> bytes:
        """The first four bytes of AES-CMAC (C_Verify cannot check a 4-byte tag on SoftHSM2, docs/pkcs11.md §5.6)."""
        _check(self._c["SignInit"](session, ctypes.byref(_CMAC), key), "C_SignInit")
        out, size = ctypes.create_string_buffer(_BLOCK), CK_ULONG(_BLOCK)
        _check(self._c["Sign"](session, message, len(message), out, ctypes.byref(size)), "C_Sign")
        return out.raw[:MIC_LEN]

    def decrypt_ecb(self, session: int, key: int, data: bytes) -> bytes:
        """AES-ECB decryption (LoRaWAN encrypts a JoinAccept with the decrypt direction)."""
        _check(self._c["DecryptInit"](session, ctypes.byref(_ECB), key), "C_DecryptInit")
        out, size = ctypes.create_string_buffer(len(data)), CK_ULONG(len(data))
        _check(self._c["Decrypt"](session, data, len(data), out, ctypes.byref(size)), "C_Decrypt")
        return out.raw[: size.value]


_loaded: dict[str, Cryptoki] = {}


def library(module: str) -> Cryptoki:
    """The module, loaded and initialised on first use; one `Cryptoki` per path for the process."""
    found = _loaded.get(module)
    if found is None:
        found = _loaded[module] = Cryptoki(module)
    return found


def loaded(module: str) -> bool:
    """True once this process has loaded `module` (its SoftHSM2 config is then fixed)."""
    return module in _loaded
