"""The join recipe as raw PKCS#11 calls through ctypes: the hot path of the daemon.

python-pkcs11 spends most of a join in Python, not in the token: every key object it returns gets a class
built for it and two ``C_GetAttributeValue`` calls, and ``C_Sign``/``C_Decrypt``/``C_WrapKey`` are each called
twice to learn the output size (docs/pkcs11.md §1). The same PKCS#11 calls made directly, with templates and
mechanisms built once at import, halve the CPU of a join. Management (KEK lookups, imports, logins) stays
on python-pkcs11; both share the module's function list and session handles, and this code runs only in
the jsd-hsm thread like every other PKCS#11 call.

The templates equal those in ``_token.py``: unwrapped root keys sensitive and non-extractable with exactly
the usages the recipe needs (the storage KEK's ``CKA_UNWRAP_TEMPLATE`` demands EXTRACTABLE=False and
SENSITIVE=True explicitly), session keys sensitive but wrappable, MIC and encryption keys one usage each.
"""

from __future__ import annotations

import ctypes
import hmac
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import pkcs11.exceptions as p11err
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from jsd.hsm._cryptoki import _ERRORS, _Attribute, _FunctionList, _Mechanism
from jsd.hsm.errors import InvalidKeyBlob, MicMismatch
from jsd.hsm.recipe import JoinOutput, JoinRecipe, RootUsage, Usage

CK_ULONG = ctypes.c_ulong
_P_ULONG = ctypes.POINTER(CK_ULONG)
_P_MECH = ctypes.POINTER(_Mechanism)
_P_ATTR = ctypes.POINTER(_Attribute)
_BLOB_LEN: Final = 24
_MIC_LEN: Final = 4

# PKCS#11 return codes that mean "this blob does not unwrap under this KEK".
_BAD_BLOB: Final = frozenset({0x040, 0x110, 0x112, 0x005})


class _KeyDerivationString(ctypes.Structure):
    _fields_ = [("pData", ctypes.c_void_p), ("ulLen", CK_ULONG)]


class _Template:
    """A CK_ATTRIBUTE array built once; the values it points to live as long as the object."""

    def __init__(self, attrs: Mapping[Attribute, bool | int]) -> None:
        self._values: list[Any] = []
        self.array = (_Attribute * len(attrs))()
        for item, (kind, value) in zip(self.array, attrs.items(), strict=True):
            scalar: Any = ctypes.c_ubyte(value) if isinstance(value, bool) else CK_ULONG(int(value))
            self._values.append(scalar)
            item.type, item.pValue, item.ulValueLen = int(kind), ctypes.addressof(scalar), ctypes.sizeof(scalar)
        self.count = len(attrs)


NO_USAGE: Final[dict[Attribute, bool | int]] = {
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
USAGE_ATTR: Final = {"sign": Attribute.SIGN, "decrypt": Attribute.DECRYPT, "derive": Attribute.DERIVE}


def _root_template(usage: RootUsage) -> _Template:
    return _Template({**NO_USAGE, Attribute.EXTRACTABLE: False, **{USAGE_ATTR[u]: True for u in usage}})


_ROOT_TEMPLATES: dict[RootUsage, _Template] = {}
_DERIVED: Final[Mapping[Usage, _Template]] = {
    "session": _Template({**NO_USAGE, Attribute.EXTRACTABLE: True, Attribute.VALUE_LEN: 16}),
    "mic": _Template({**NO_USAGE, Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.VALUE_LEN: 16}),
    "enc": _Template({**NO_USAGE, Attribute.EXTRACTABLE: False, Attribute.DECRYPT: True, Attribute.VALUE_LEN: 16}),
}
_KEY_WRAP = _Mechanism(int(Mechanism.AES_KEY_WRAP), None, 0)
_CMAC = _Mechanism(int(Mechanism.AES_CMAC), None, 0)
_ECB = _Mechanism(int(Mechanism.AES_ECB), None, 0)


def _rv(rv: int, call: str) -> None:
    if rv != 0:
        raise _ERRORS.get(rv, p11err.PKCS11Error)(f"{call} returned CKR 0x{rv:x}")


class FastJoin:
    """The PKCS#11 functions a join needs, bound once per module."""

    def __init__(self, module: str) -> None:
        dll = ctypes.CDLL(module)
        pointer = ctypes.POINTER(_FunctionList)()
        _rv(dll.C_GetFunctionList(ctypes.byref(pointer)), "C_GetFunctionList")
        table = pointer.contents

        def fn(name: str, *argtypes: Any) -> Callable[..., int]:
            function: Callable[..., int] = ctypes.CFUNCTYPE(CK_ULONG, *argtypes)(getattr(table, f"C_{name}"))
            return function

        self.unwrap = fn(
            "UnwrapKey", CK_ULONG, _P_MECH, CK_ULONG, ctypes.c_char_p, CK_ULONG, _P_ATTR, CK_ULONG, _P_ULONG
        )
        self.derive = fn("DeriveKey", CK_ULONG, _P_MECH, CK_ULONG, _P_ATTR, CK_ULONG, _P_ULONG)
        self.sign_init = fn("SignInit", CK_ULONG, _P_MECH, CK_ULONG)
        self.sign = fn("Sign", CK_ULONG, ctypes.c_char_p, CK_ULONG, ctypes.c_char_p, _P_ULONG)
        self.decrypt_init = fn("DecryptInit", CK_ULONG, _P_MECH, CK_ULONG)
        self.decrypt = fn("Decrypt", CK_ULONG, ctypes.c_char_p, CK_ULONG, ctypes.c_char_p, _P_ULONG)
        self.wrap = fn("WrapKey", CK_ULONG, _P_MECH, CK_ULONG, CK_ULONG, ctypes.c_char_p, _P_ULONG)
        self.destroy = fn("DestroyObject", CK_ULONG, CK_ULONG)

    def _cmac4(self, session: int, key: int, message: bytes) -> bytes:
        _rv(self.sign_init(session, ctypes.byref(_CMAC), key), "C_SignInit")
        out, size = ctypes.create_string_buffer(16), CK_ULONG(16)
        _rv(self.sign(session, message, len(message), out, ctypes.byref(size)), "C_Sign")
        return out.raw[:_MIC_LEN]

    def _check(self, session: int, key: int, message: bytes, mic: bytes) -> None:
        if not hmac.compare_digest(self._cmac4(session, key, message), mic):
            raise MicMismatch("MIC mismatch")

    def _wrap(self, session: int, kek: int, key: int) -> bytes:
        out, size = ctypes.create_string_buffer(_BLOB_LEN), CK_ULONG(_BLOB_LEN)
        _rv(self.wrap(session, ctypes.byref(_KEY_WRAP), kek, key, out, ctypes.byref(size)), "C_WrapKey")
        return out.raw[: size.value]

    def run(
        self,
        session: int,
        recipe: JoinRecipe,
        storage_kek: int,
        keks: Mapping[str, int],
        store_kek: int | None,
        probe: Callable[[], object],
    ) -> JoinOutput:
        """Execute ``recipe``; every session object it creates is destroyed before returning.

        ``probe`` touches the storage KEK: SoftHSM2 reports a failed RFC 3394 check as CKR_GENERAL_ERROR,
        which also means a lost token, so a bad blob is told apart by the KEK still answering.
        """
        usage = recipe.root_usage()
        request = recipe.request_mic
        slots: dict[str, int] = {}
        handle = CK_ULONG()
        try:
            for name, blob in recipe.roots.items():
                if len(blob) != _BLOB_LEN:
                    raise InvalidKeyBlob(f"root key blob {name!r}: a key blob is {_BLOB_LEN} bytes, got {len(blob)}")
                template = _ROOT_TEMPLATES.get(usage[name]) or _ROOT_TEMPLATES.setdefault(
                    usage[name], _root_template(usage[name])
                )
                rv = self.unwrap(
                    session,
                    ctypes.byref(_KEY_WRAP),
                    storage_kek,
                    blob,
                    len(blob),
                    template.array,
                    template.count,
                    ctypes.byref(handle),
                )
                if rv in _BAD_BLOB:
                    if rv == 0x005:
                        probe()
                    raise InvalidKeyBlob(f"root key blob {name!r} of group {recipe.group!r} does not unwrap")
                _rv(rv, "C_UnwrapKey")
                slots[name] = handle.value
                if request is not None and request[0] == name:
                    self._check(session, handle.value, request[1], request[2])
            for step in recipe.derives:
                data = ctypes.create_string_buffer(step.block, len(step.block))
                param = _KeyDerivationString(ctypes.addressof(data), len(step.block))
                mech = _Mechanism(int(Mechanism.AES_ECB_ENCRYPT_DATA), ctypes.addressof(param), ctypes.sizeof(param))
                template = _DERIVED[step.usage]
                _rv(
                    self.derive(
                        session,
                        ctypes.byref(mech),
                        slots[step.parent],
                        template.array,
                        template.count,
                        ctypes.byref(handle),
                    ),
                    "C_DeriveKey",
                )
                slots[step.slot] = handle.value
                if request is not None and request[0] == step.slot:
                    self._check(session, handle.value, request[1], request[2])
            mic = self._cmac4(session, slots[recipe.accept_mic[0]], recipe.accept_mic[1])
            plain = recipe.accept_body + mic
            _rv(self.decrypt_init(session, ctypes.byref(_ECB), slots[recipe.accept_encrypt]), "C_DecryptInit")
            out, size = ctypes.create_string_buffer(len(plain)), CK_ULONG(len(plain))
            _rv(self.decrypt(session, plain, len(plain), out, ctypes.byref(size)), "C_Decrypt")
            encrypted = out.raw[: size.value]
            wrapped = {(slot, label): self._wrap(session, keks[label], slots[slot]) for slot, label in recipe.wraps}
            stored = {slot: self._wrap(session, _kek(store_kek), slots[slot]) for slot in recipe.store}
        except BaseException:
            self._destroy(session, slots.values(), quiet=True)
            raise
        self._destroy(session, slots.values(), quiet=False)
        return JoinOutput(encrypted_accept=encrypted, wrapped=wrapped, stored=stored)

    def _destroy(self, session: int, handles: Iterable[int], quiet: bool) -> None:
        failed = 0
        for key in handles:
            rv = self.destroy(session, key)
            failed = failed or rv
        if failed and not quiet:
            _rv(failed, "C_DestroyObject")


def _kek(handle: int | None) -> int:
    if handle is None:
        raise ValueError("the recipe stores keys but no storage KEK was given")
    return handle


_bound: dict[str, FastJoin] = {}


def fast_join(module: str) -> FastJoin:
    """One binding per module path (the jsd-hsm thread is the only caller)."""
    if module not in _bound:
        _bound[module] = FastJoin(module)
    return _bound[module]
