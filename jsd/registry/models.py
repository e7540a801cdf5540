"""Plain values passed in and out of the registry; no SQLAlchemy types leak past this package."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Device", "NetworkServer", "NewDevice", "NonceState", "SessionKey"]


@dataclass(frozen=True)
class NonceState:
    """Per-device nonce bookkeeping; `version` is the optimistic-lock counter the registry bumps."""

    version: int
    join_nonce: int
    last_dev_nonce: int | None
    used_dev_nonces: tuple[int, ...]
    rj_count0: int | None
    rj_count1: int | None


@dataclass(frozen=True)
class NewDevice:
    """What provisioning supplies: root keys arrive already wrapped, never in clear."""

    dev_eui: bytes
    join_eui: bytes
    mac_version: str
    hsm_group: str
    app_key_blob: bytes
    nwk_key_blob: bytes | None = None
    home_net_id: bytes | None = None
    astk_label: str | None = None
    owner_account: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Device(NewDevice):
    """A provisioned device: what provisioning supplied, with its nonce state read in the same query."""

    nonces: NonceState = field(kw_only=True)


@dataclass(frozen=True)
class NetworkServer:
    """A Backend Interfaces peer, found by NetID, bearer-token hash or client-certificate fingerprint."""

    net_id: bytes
    name: str
    kek_label: str
    token_hash: str | None
    cert_fingerprint: str | None
    answer_url: str | None
    async_mode: bool


@dataclass(frozen=True)
class SessionKey:
    """The AppSKey of one join, wrapped under the group's storage KEK, kept for AppSKeyReq."""

    session_key_id: str
    dev_eui: bytes
    hsm_group: str
    app_s_key_blob: bytes
    join_nonce: int
    dev_nonce: int
