"""Secure-element devices: TKM info and the derivations of their root keys from a lot master key.

A secure element leaves the factory with root keys its vendor derived from a lot master key (LMK) and the
element's id. The TKM info printed with it (10 bytes) says how: SE_INFO packs SE_MANUF_ID, SE_PROD_ID, LMK_ID
and DERIVE_ALGO_ID as 4-bit fields (in that order, high nibble first), then comes the 8-byte SE_ID. The Join
Server holds the LMK in the HSM (DERIVE only) and derives the same keys there; they never appear in clear.

Vendors add derivations by registering an object with `algorithm_id` and `blocks()` under the entry-point group
``jsd.se_derivations``; `derivation(algorithm_id)` finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Protocol

__all__ = ["AesEcbDerivation", "SeDerivation", "TkmInfo", "derivation", "lot_master_key_label"]

TKM_INFO_LEN = 10


@dataclass(frozen=True)
class TkmInfo:
    se_manuf_id: int
    se_prod_id: int
    lmk_id: int
    derive_algo_id: int
    se_id: bytes

    @classmethod
    def from_bytes(cls, raw: bytes) -> TkmInfo:
        if len(raw) != TKM_INFO_LEN:
            raise ValueError(f"TKM info is {TKM_INFO_LEN} bytes (20 hex digits)")
        return cls(raw[0] >> 4, raw[0] & 0xF, raw[1] >> 4, raw[1] & 0xF, raw[2:])

    def to_bytes(self) -> bytes:
        return bytes([self.se_manuf_id << 4 | self.se_prod_id, self.lmk_id << 4 | self.derive_algo_id]) + self.se_id


def lot_master_key_label(tkm: TkmInfo) -> str:
    """The token label of the LMK that a TKM info points at (one per manufacturer, product and lot key)."""
    return f"lmk-{tkm.se_manuf_id:x}-{tkm.se_prod_id:x}-{tkm.lmk_id:x}"


class SeDerivation(Protocol):
    """How a vendor derives root keys: one 16-byte input block per key, encrypted with the LMK (AES-ECB)."""

    algorithm_id: int

    def blocks(self, tkm: TkmInfo, uses_nwk_key: bool) -> dict[str, bytes]:
        """Blocks by key name (``app_key``, and ``nwk_key`` for LoRaWAN 1.1)."""
        ...


class AesEcbDerivation:
    """Algorithm 1: ``key = AES-128-ECB(LMK, type || SE_ID || SE_INFO || 0x00 * 5)``, type 0x01 AppKey, 0x02 NwkKey.

    Binding SE_INFO into the block keeps keys of different products apart even under one LMK.
    """

    algorithm_id = 1

    def blocks(self, tkm: TkmInfo, uses_nwk_key: bool) -> dict[str, bytes]:
        info = tkm.to_bytes()[:2]
        out = {"app_key": b"\x01" + tkm.se_id + info + bytes(5)}
        if uses_nwk_key:
            out["nwk_key"] = b"\x02" + tkm.se_id + info + bytes(5)
        return out


@cache
def _registered() -> dict[int, SeDerivation]:
    found: dict[int, SeDerivation] = {1: AesEcbDerivation()}
    for entry in entry_points(group="jsd.se_derivations"):
        algorithm = entry.load()
        instance = algorithm() if isinstance(algorithm, type) else algorithm
        found[int(instance.algorithm_id)] = instance
    return found


def derivation(algorithm_id: int) -> SeDerivation | None:
    """The derivation with this DERIVE_ALGO_ID, built-in or from a plugin; None if nobody knows it."""
    return _registered().get(algorithm_id)
