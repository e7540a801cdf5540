"""`Hsm`: the asyncio face of the token; every method is one hop to the jsd-hsm thread."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from jsd.hsm import _keys, _thread, _token
from jsd.hsm.config import HsmSettings
from jsd.hsm.errors import HsmUnavailable
from jsd.hsm.recipe import JoinOutput, JoinRecipe, check_group, check_kek_label

__all__ = ["Hsm"]

T = TypeVar("T")

_KEY_LEN: Final = 16
_MIC_LEN: Final = 4
_MAX_RANDOM: Final = 1024


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes):
        raise TypeError(f"a key is bytes, not {type(key).__name__}")
    if len(key) != _KEY_LEN:
        raise ValueError(f"a LoRaWAN key or KEK is {_KEY_LEN} bytes, got {len(key)}")
    return key


class Hsm:
    """Key custody for the Join Server: root keys stay in the token, callers hand in blobs and labels.

    Open with `await Hsm.open(settings)` (or `async with await Hsm.open(...)`). Several `Hsm` objects on the
    same token share one login; the last `aclose()` logs out.
    """

    __slots__ = ("_closed", "_login")

    def __init__(self, login: _token.Login) -> None:
        """Use `Hsm.open`; this only wraps an acquired login."""
        self._login = login
        self._closed = False

    @classmethod
    async def open(cls, settings: HsmSettings) -> Hsm:
        """Load the module, find the token and log in (or join this process's existing login)."""
        return cls(await _thread.call(_token.acquire, settings))

    async def aclose(self) -> None:
        """Release this handle; the token is logged out when no other `Hsm` in the process uses it."""
        if not self._closed:
            self._closed = True
            await _thread.call(_token.release, self._login)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Hsm token={self._login.settings.token_label!r} module={self._login.settings.module!r} {state}>"

    @property
    def settings(self) -> HsmSettings:
        """The settings this handle was opened with (the PIN stays masked)."""
        return self._login.settings

    async def _run(self, operation: str, fn: Callable[..., T], *args: Any, weight: int = 1) -> T:
        if self._closed:
            raise HsmUnavailable("this HSM handle is closed")
        run = _token.run if weight == 1 else functools.partial(_token.run, weight=weight)
        return await _thread.call(run, self._login, operation, fn, *args)

    async def ensure_storage_kek(self, group: str) -> bool:
        """Create the group's storage KEKs if absent (True if any was created); check them either way."""
        return await self._run("ensure storage KEK", _keys.ensure_storage_kek, check_group(group))

    async def import_root_key(self, group: str, key: bytes) -> bytes:
        """Provisioning: turn a clear 16-byte root key into a 24-byte RFC 3394 blob under the storage KEK."""
        return await self._run("import root key", _keys.import_root_key, check_group(group), _check_key(key))

    async def generate_root_key(self, group: str) -> tuple[bytes, bytes]:
        """A root key from the token's generator: (blob, clear key), the clear key for one-time export."""
        return await self._run("generate root key", _keys.generate_root_key, check_group(group))

    async def import_root_keys(self, group: str, keys: Sequence[bytes]) -> list[bytes]:
        """`import_root_key` for many keys in one hop to the HSM thread (bulk imports): the blobs in order."""
        checked = [_check_key(key) for key in keys]
        return await self._run(
            "import root keys", _keys.import_root_keys, check_group(group), checked, weight=len(checked)
        )

    async def generate_root_keys(self, group: str, count: int) -> list[tuple[bytes, bytes]]:
        """`generate_root_key` `count` times in one hop: (blob, clear key) pairs."""
        return await self._run("generate root keys", _keys.generate_root_keys, check_group(group), count, weight=count)

    async def import_kek(self, label: str, key: bytes) -> None:
        """Import a shared NS KEK or ASTK as a WRAP-only AES-128 token object; `KekExists` if taken."""
        await self._run("import KEK", _keys.import_kek, check_kek_label(label), _check_key(key))

    async def generate_exportable_kek(self, label: str) -> None:
        """A transport KEK (ASTK) from the token's generator that `export_kek_once` may reveal one time."""
        await self._run("generate KEK", _keys.generate_exportable_kek, check_kek_label(label))

    async def export_kek_once(self, label: str) -> bytes:
        """The clear value of a generated KEK, then locked for good; `KeyNotExportable` after that."""
        return await self._run("export KEK", _keys.export_kek_once, check_kek_label(label))

    async def import_lot_master_key(self, label: str, key: bytes) -> None:
        """A secure-element lot master key: a DERIVE-only token object, never readable again."""
        await self._run("import lot master key", _keys.import_lot_master_key, check_kek_label(label), _check_key(key))

    async def derive_root_key(self, group: str, master_label: str, block: bytes) -> bytes:
        """A secure-element root key, AES-ECB(master, block), derived in the token; returned as a storage blob."""
        check_group(group)
        check_kek_label(master_label)
        if not isinstance(block, bytes) or len(block) != _KEY_LEN:
            raise ValueError(f"a derivation block is {_KEY_LEN} bytes")
        return await self._run("derive root key", _keys.derive_root_key, group, master_label, block)

    async def has_kek(self, label: str) -> bool:
        """True if the token holds a key with this label."""
        return await self._run("look up KEK", _keys.has_kek, check_kek_label(label))

    async def generate_random(self, nbytes: int) -> bytes:
        """Random bytes from the token (e.g. JoinNonce seeds, owner tokens)."""
        if not 0 < nbytes <= _MAX_RANDOM:
            raise ValueError(f"nbytes must be 1..{_MAX_RANDOM}")
        return await self._run("generate random", _keys.generate_random, nbytes)

    async def check_mic(self, group: str, blob: bytes, message: bytes, mic: bytes) -> None:
        """Verify a JoinReq MIC with the root key only (tells MICFailed from a replayed DevNonce)."""
        check_group(group)
        if not isinstance(mic, bytes) or len(mic) != _MIC_LEN:
            raise ValueError(f"a MIC is {_MIC_LEN} bytes")
        await self._run("check MIC", _keys.check_mic, group, blob, message, mic)

    async def run_join(self, recipe: JoinRecipe) -> JoinOutput:
        """All the crypto of one join or rejoin in one executor call (docs/design.md, "the join recipe")."""
        return await self._run("join", _keys.run_join, recipe)

    async def rewrap(self, group: str, blob: bytes, kek_label: str) -> bytes:
        """A stored session-key blob (AppSKey) re-wrapped under a transport KEK, for AppSKeyReq."""
        return await self._run("rewrap", _keys.rewrap, check_group(group), blob, check_kek_label(kek_label))
