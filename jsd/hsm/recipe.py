"""The join recipe: pure data saying what `Hsm.run_join` computes, checked before the token is touched.

`jsd.join` builds recipes with `jsd.lorawan` (blocks, MIC inputs, accept body); this module only knows
slots, 16-byte derivation blocks and which key may do what:

- a *root* slot (unwrapped from a storage blob) may derive, sign and decrypt, and is never wrapped out;
- a derived ``"session"`` key is wrappable and can do nothing else;
- a derived ``"mic"`` key (JSIntKey) can only sign, an ``"enc"`` key (JSEncKey) can only decrypt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "Derive",
    "JoinOutput",
    "JoinRecipe",
    "Usage",
    "check_group",
    "check_kek_label",
    "session_store_kek_label",
    "storage_kek_label",
]

Usage = Literal["session", "mic", "enc"]

STORAGE_KEK_PREFIX: Final = "jsd-storage-"
SESSION_STORE_KEK_PREFIX: Final = "jsd-sessions-"
_RESERVED_PREFIXES: Final = (STORAGE_KEK_PREFIX, SESSION_STORE_KEK_PREFIX)
GROUP_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}"
"""An HSM group's name: it ends up in storage KEK labels (the API's checks use this same pattern)."""
_GROUP_RE: Final = re.compile(GROUP_PATTERN)
_USAGES: Final = frozenset({"session", "mic", "enc"})
_BLOCK_LEN: Final = 16
_MIC_LEN: Final = 4
_ACCEPT_BODY_LENS: Final = (12, 28)

# What a root key needs CKA_SIGN / CKA_DECRYPT / CKA_DERIVE for.
RootUsage = frozenset[Literal["sign", "decrypt", "derive"]]


def check_group(group: str) -> str:
    """HSM group names end up in token labels: keep them short and printable."""
    if not isinstance(group, str) or not _GROUP_RE.fullmatch(group):
        raise ValueError(f"invalid HSM group name {group!r}: use 1-48 characters from [A-Za-z0-9._-]")
    return group


def storage_kek_label(group: str) -> str:
    """Label of the KEK that wraps the group's root keys."""
    return f"{STORAGE_KEK_PREFIX}{check_group(group)}"


def session_store_kek_label(group: str) -> str:
    """Label of the KEK that wraps the group's stored session keys (the AppSKey kept for AppSKeyReq)."""
    return f"{SESSION_STORE_KEK_PREFIX}{check_group(group)}"


def check_kek_label(label: str) -> str:
    """A transport KEK label (NS KEK, ASTK): printable, at most 64 characters, not a storage label."""
    if not isinstance(label, str) or not label or len(label) > 64 or not label.isprintable():
        raise ValueError(f"invalid KEK label {label!r}: 1-64 printable characters")
    if label.startswith(_RESERVED_PREFIXES):
        raise ValueError(f"KEK label {label!r} uses a prefix reserved for storage KEKs")
    return label


@dataclass(frozen=True)
class Derive:
    """One `CKM_AES_ECB_ENCRYPT_DATA` step, ``slot = AES-ECB(parent, block)``; the parent is a root slot."""

    slot: str
    parent: str
    block: bytes
    usage: Usage

    def __post_init__(self) -> None:
        if not isinstance(self.slot, str) or not self.slot:
            raise ValueError("a derive needs a non-empty slot name")
        if not isinstance(self.block, bytes) or len(self.block) != _BLOCK_LEN:
            raise ValueError(f"derive {self.slot!r}: the block must be {_BLOCK_LEN} bytes")
        if self.usage not in _USAGES:
            raise ValueError(f"derive {self.slot!r}: usage must be one of {sorted(_USAGES)}")


@dataclass(frozen=True)
class JoinRecipe:
    """Everything one join computes inside the token, in one executor call (see docs/design.md)."""

    group: str
    roots: Mapping[str, bytes]
    derives: Sequence[Derive]
    request_mic: tuple[str, bytes, bytes] | None
    accept_mic: tuple[str, bytes]
    accept_body: bytes
    accept_encrypt: str
    wraps: Sequence[tuple[str, str]]
    store: Sequence[str]

    def __post_init__(self) -> None:
        check_group(self.group)
        if not self.roots:
            raise ValueError("a recipe needs at least one root key")
        for name, blob in self.roots.items():
            if not isinstance(name, str) or not name:
                raise ValueError("root slot names must be non-empty strings")
            if not isinstance(blob, bytes):
                raise TypeError(f"root {name!r}: the blob must be bytes")
        usage: dict[str, Usage | None] = dict.fromkeys(self.roots)
        for step in self.derives:
            if step.slot in usage:
                raise ValueError(f"slot {step.slot!r} is defined twice")
            if step.parent not in usage:
                raise ValueError(f"derive {step.slot!r}: unknown parent slot {step.parent!r}")
            if usage[step.parent] is not None:
                raise ValueError(f"derive {step.slot!r}: parent {step.parent!r} is not a root key")
            usage[step.slot] = step.usage
        signers = {slot for slot, use in usage.items() if use in (None, "mic")}
        if self.request_mic is not None:
            slot, _message, mic = self.request_mic
            if slot not in signers:
                raise ValueError(f"request MIC slot {slot!r} is not a root or a 'mic' key")
            if not isinstance(mic, bytes) or len(mic) != _MIC_LEN:
                raise ValueError(f"the request MIC must be {_MIC_LEN} bytes")
        if self.accept_mic[0] not in signers:
            raise ValueError(f"accept MIC slot {self.accept_mic[0]!r} is not a root or a 'mic' key")
        if not isinstance(self.accept_body, bytes) or len(self.accept_body) not in _ACCEPT_BODY_LENS:
            raise ValueError(f"the accept body must be {' or '.join(map(str, _ACCEPT_BODY_LENS))} bytes")
        if usage.get(self.accept_encrypt, "session") not in (None, "enc"):
            raise ValueError(f"accept encryption slot {self.accept_encrypt!r} is not a root or an 'enc' key")
        sessions = {slot for slot, use in usage.items() if use == "session"}
        if len(set(self.wraps)) != len(self.wraps) or len(set(self.store)) != len(self.store):
            raise ValueError("wraps and store must not repeat an entry")
        for slot, label in self.wraps:
            if slot not in sessions:
                raise ValueError(f"wrap: slot {slot!r} is not a derived 'session' key")
            check_kek_label(label)
        for slot in self.store:
            if slot not in sessions:
                raise ValueError(f"store: slot {slot!r} is not a derived 'session' key")

    def root_usage(self) -> dict[str, RootUsage]:
        """Exactly the capabilities each root key needs, so the unwrapped object gets no more."""
        needs: dict[str, set[Literal["sign", "decrypt", "derive"]]] = {name: set() for name in self.roots}
        for step in self.derives:
            needs[step.parent].add("derive")
        mic_slots = [self.accept_mic[0]] + ([self.request_mic[0]] if self.request_mic else [])
        for slot in mic_slots:
            if slot in needs:
                needs[slot].add("sign")
        if self.accept_encrypt in needs:
            needs[self.accept_encrypt].add("decrypt")
        return {name: frozenset(use) for name, use in needs.items()}


@dataclass(frozen=True)
class JoinOutput:
    """What leaves the token after a join: ciphertext and RFC 3394 blobs, never a clear key."""

    encrypted_accept: bytes
    wrapped: Mapping[tuple[str, str], bytes]
    stored: Mapping[str, bytes]
