"""LoRaWAN MAC versions the Join Server serves, and the rules that depend on them."""

from __future__ import annotations

import enum

__all__ = ["MACVersion", "dev_nonce_is_counter", "is_1_1", "parse_mac_version"]


class MACVersion(enum.Enum):
    """A LoRaWAN L2 version; the value is its canonical spelling."""

    V1_0_0 = "1.0.0"
    V1_0_1 = "1.0.1"
    V1_0_2 = "1.0.2"
    V1_0_3 = "1.0.3"
    V1_0_4 = "1.0.4"
    V1_1 = "1.1"


# Network servers spell two versions in two ways: ChirpStack sends "1.1.0", The Things Stack "1.1", and The
# Things Stack writes LoRaWAN 1.0.0 as "1.0" (lorawan-stack pkg/interop/types.go, MACVersion.MarshalText).
_ALIASES = {"1.1.0": MACVersion.V1_1, "1.0": MACVersion.V1_0_0}


def parse_mac_version(s: str) -> MACVersion:
    """Read a MACVersion string as sent by a network server ("1.0", "1.0.0".."1.0.4", "1.1", "1.1.0")."""
    if s in _ALIASES:
        return _ALIASES[s]
    try:
        return MACVersion(s)
    except ValueError:
        known = ", ".join(repr(v.value) for v in MACVersion)
        raise ValueError(f"unknown LoRaWAN MAC version {s!r}; expected one of {known}, '1.0' or '1.1.0'") from None


def dev_nonce_is_counter(v: MACVersion) -> bool:
    """True when DevNonce is a counter that must increase (1.0.4, 1.1 §6.2); 1.0.0-1.0.3 only forbid reuse."""
    return v in (MACVersion.V1_0_4, MACVersion.V1_1)


def is_1_1(v: MACVersion) -> bool:
    """True for LoRaWAN 1.1: two root keys, OptNeg join-accept, JS keys and Rejoin-requests."""
    return v is MACVersion.V1_1
