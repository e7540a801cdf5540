"""The registry: devices, nonce state, network servers and session keys, in SQL Core.

Statements are built once at import time; each call only binds parameters. The two calls of every join,
`get_device` and `commit_join`, go through `hotpath`: batched per Registry (group commit for the writes)
and run on the driver connection with these same statements compiled once, because SQLAlchemy's per-call
overhead alone is several times the CPU budget of a join (figures in `hotpath`'s docstring).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from sqlalchemy import ARRAY, Delete, Executable, String, Update, any_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from jsd.registry.engine import read_only, writes_first
from jsd.registry.errors import DeviceExists, NetworkServerExists, NotFound
from jsd.registry.hotpath import HotStatements, JoinWrite, WriteStats, hot_path_for
from jsd.registry.journal import EventRecord
from jsd.registry.models import Device, NetworkServer, NewDevice, NonceState, SessionKey
from jsd.registry.tables import (
    device_nonces,
    devices,
    events,
    fresh_nonces_row,
    network_servers,
    outbox,
    reset_nonces_values,
    session_keys,
)

__all__ = ["MAX_USED_DEV_NONCES", "SESSION_KEYS_KEPT", "Registry"]

MAX_USED_DEV_NONCES = 1024
"""At most this many used DevNonces are stored per device (the newest); older ones are dropped."""

SESSION_KEYS_KEPT = 10
"""Default number of a device's newest session keys kept for AppSKeyReq."""

_MAX_JOIN_NONCE = 0xFFFFFF
_MAX_U16 = 0xFFFF
_BULK_CHUNK = 2_000
_HEX = re.compile("[0-9a-fA-F]*")

_DEVICE_COLUMNS = (
    devices.c.dev_eui,
    devices.c.join_eui,
    devices.c.mac_version,
    devices.c.hsm_group,
    devices.c.app_key_blob,
    devices.c.nwk_key_blob,
    devices.c.home_net_id,
    devices.c.astk_label,
    devices.c.owner_account,
    devices.c.name,
    device_nonces.c.version,
    device_nonces.c.join_nonce,
    device_nonces.c.last_dev_nonce,
    device_nonces.c.used_dev_nonces,
    device_nonces.c.rj_count0,
    device_nonces.c.rj_count1,
)
_SELECT_DEVICES = select(*_DEVICE_COLUMNS).select_from(
    devices.join(device_nonces, device_nonces.c.dev_eui == devices.c.dev_eui)
)
_GET_DEVICE = _SELECT_DEVICES.where(devices.c.dev_eui == bindparam("p_dev_eui"))
_GET_DEVICES_ANY = _SELECT_DEVICES.where(devices.c.dev_eui == any_(bindparam("p_euis", type_=ARRAY(String))))
_LIST_DEVICES = (
    _SELECT_DEVICES.order_by(devices.c.dev_eui).limit(bindparam("p_limit")).offset(bindparam("p_offset"))
)
_COUNT_DEVICES = select(func.count()).select_from(devices)
_INSERT_DEVICE = insert(devices)
_INSERT_NONCES = insert(device_nonces)

_COMMIT_NONCES = (
    update(device_nonces)
    .where(
        device_nonces.c.dev_eui == bindparam("p_dev_eui"),
        device_nonces.c.version == bindparam("p_expected"),
        device_nonces.c.join_nonce < bindparam("p_join_nonce"),
    )
    .values(
        version=bindparam("p_version"),
        join_nonce=bindparam("p_join_nonce"),
        last_dev_nonce=bindparam("p_last_dev_nonce"),
        used_dev_nonces=bindparam("p_used_dev_nonces"),
        rj_count0=bindparam("p_rj_count0"),
        rj_count1=bindparam("p_rj_count1"),
        updated_at=func.now(),
    )
)
# Built once for the join's event data: ``json.dumps`` with any argument builds a new encoder per call.
_SORTED_JSON = json.JSONEncoder(sort_keys=True)
_NONCE_CHECK = select(device_nonces.c.version, device_nonces.c.join_nonce).where(
    device_nonces.c.dev_eui == bindparam("p_dev_eui")
)
_RESET_DEV_NONCES = (
    update(device_nonces)
    .where(device_nonces.c.dev_eui == bindparam("p_dev_eui"))
    .values(reset_nonces_values())
)
_INSERT_SESSION = insert(session_keys)
_SESSION_COLUMNS = ("session_key_id", "dev_eui", "hsm_group", "app_s_key_blob", "join_nonce", "dev_nonce")
_PRUNE_SESSIONS = delete(session_keys).where(
    session_keys.c.dev_eui == bindparam("p_dev_eui"),
    session_keys.c.join_nonce <= bindparam("p_upto"),
)
_GET_SESSION = select(
    session_keys.c.session_key_id,
    session_keys.c.dev_eui,
    session_keys.c.hsm_group,
    session_keys.c.app_s_key_blob,
    session_keys.c.join_nonce,
    session_keys.c.dev_nonce,
).where(
    session_keys.c.session_key_id == bindparam("p_id"),
    session_keys.c.dev_eui == bindparam("p_dev_eui"),
)

_NS_COLUMNS = (
    network_servers.c.net_id,
    network_servers.c.name,
    network_servers.c.kek_label,
    network_servers.c.token_hash,
    network_servers.c.cert_fingerprint,
    network_servers.c.answer_url,
    network_servers.c.async_mode,
)
_HOT_STATEMENTS = HotStatements(
    get_device=_GET_DEVICE,
    get_devices_any=_GET_DEVICES_ANY,
    nonce_check=_NONCE_CHECK,
    update_nonces=_COMMIT_NONCES,
    insert_session=_INSERT_SESSION,
    session_columns=_SESSION_COLUMNS,
    prune_sessions=_PRUNE_SESSIONS,
    insert_event=insert(events),
    event_columns=("event_id", "type", "account", "dev_eui", "data"),
    insert_outbox=insert(outbox),
)

_SELECT_NS = select(*_NS_COLUMNS)
_NS_BY_NET_ID = _SELECT_NS.where(network_servers.c.net_id == bindparam("p_key"))
_NS_BY_TOKEN = _SELECT_NS.where(network_servers.c.token_hash == bindparam("p_key"))
_NS_BY_CERT = _SELECT_NS.where(network_servers.c.cert_fingerprint == bindparam("p_key"))
_LIST_NS = _SELECT_NS.order_by(network_servers.c.net_id)


class Registry:
    """Persistence for the Join Server; the only writer of nonce state.

    Nonce rules (what is a replay, what comes next) belong to `jsd.join`; the registry only makes
    sure a state is written over exactly the version it was computed from.
    """

    def __init__(self, engine: AsyncEngine, *, session_keys_kept: int = SESSION_KEYS_KEPT) -> None:
        if session_keys_kept < 1:
            raise ValueError("session_keys_kept must be at least 1")
        self._writer = writes_first(engine)
        self._reader = read_only(engine)
        self._session_keys_kept = session_keys_kept
        self._hot = hot_path_for(engine, _HOT_STATEMENTS)

    @property
    def write_stats(self) -> WriteStats:
        """How many commit_join calls were written in how many transactions (group commit at work)."""
        return self._hot.stats

    async def add_device(self, d: NewDevice) -> None:
        """Provision one device with a fresh nonce state; `DeviceExists` if the DevEUI is taken."""
        row = _device_row(d)
        try:
            async with self._writer.begin() as conn:
                await conn.execute(_INSERT_DEVICE, row)
                await conn.execute(_INSERT_NONCES, fresh_nonces_row(row["dev_eui"]))
        except IntegrityError as exc:
            raise DeviceExists(f"device {row['dev_eui']} already exists") from exc

    async def add_devices_bulk(self, devices_: Iterable[NewDevice]) -> int:
        """Provision many devices in one transaction (benchmark registries); all or nothing.

        Returns how many were added. Any duplicate DevEUI raises `DeviceExists` and adds none.
        """
        added = 0
        try:
            async with self._writer.begin() as conn:
                for chunk in _chunks(devices_, _BULK_CHUNK):
                    rows = [_device_row(d) for d in chunk]
                    await conn.execute(_INSERT_DEVICE, rows)
                    await conn.execute(_INSERT_NONCES, [fresh_nonces_row(r["dev_eui"]) for r in rows])
                    added += len(rows)
        except IntegrityError as exc:
            raise DeviceExists("one of the devices already exists (or is listed twice)") from exc
        return added

    async def get_device(self, dev_eui: bytes) -> Device | None:
        """The device and its nonce state, read together in one statement, outside any transaction.

        On SQLite this completes without suspending (an in-process read is cheaper than a thread hop).
        """
        row = await self._hot.read_device(_eui_hex(dev_eui))
        return None if row is None else _device_from_row(row)

    async def list_devices(self, limit: int = 100, offset: int = 0) -> list[Device]:
        """A page of devices in DevEUI order."""
        async with self._reader.connect() as conn:
            result = await conn.execute(_LIST_DEVICES, {"p_limit": limit, "p_offset": offset})
            return [_device_from_row(row) for row in result]

    async def count_devices(self) -> int:
        """How many devices are provisioned."""
        async with self._reader.connect() as conn:
            return int((await conn.execute(_COUNT_DEVICES)).scalar_one())

    async def remove_device(self, dev_eui: bytes) -> None:
        """Delete a device with its nonce state and session keys; `NotFound` if absent."""
        await self._change_one(
            delete(devices).where(devices.c.dev_eui == _eui_hex(dev_eui)), "device", dev_eui
        )

    async def set_home_net_id(self, dev_eui: bytes, net_id: bytes | None) -> None:
        """Set (or clear) the NetID of the device's home network server."""
        value = None if net_id is None else _net_id_hex(net_id)
        await self._change_one(
            update(devices)
            .where(devices.c.dev_eui == _eui_hex(dev_eui))
            .values(home_net_id=value, updated_at=func.now()),
            "device",
            dev_eui,
        )

    async def set_astk_label(self, dev_eui: bytes, label: str | None) -> None:
        """Set (or clear) the label of the KEK that wraps the device's AppSKey for its application."""
        await self._change_one(
            update(devices)
            .where(devices.c.dev_eui == _eui_hex(dev_eui))
            .values(astk_label=label, updated_at=func.now()),
            "device",
            dev_eui,
        )

    async def reset_dev_nonces(self, dev_eui: bytes) -> None:
        """Forget used DevNonces and RJcounts (operator action). JoinNonce is kept: it must never repeat."""
        await self._change_one(_RESET_DEV_NONCES, "device", dev_eui, {"p_dev_eui": _eui_hex(dev_eui)})

    async def commit_join(
        self,
        dev_eui: bytes,
        expected_version: int,
        new_state: NonceState,
        session: SessionKey | None,
        event: EventRecord | None = None,
    ) -> None:
        """Persist the nonce state of an accepted join, and its session key, in one transaction.

        The write applies only if the stored version is still `expected_version` (the one the state
        was computed from); otherwise `NonceConflict` and nothing changes. The stored version becomes
        `expected_version + 1` whatever `new_state.version` says. `new_state.join_nonce` must be
        greater than the stored one (`ValueError`), so a JoinNonce is never issued twice.
        `used_dev_nonces` keeps only the newest `MAX_USED_DEV_NONCES` values.

        Calls made while another commit is in flight are written together in one transaction (group
        commit); each keeps its own version check and its own outcome, and returns only once committed.
        `event` (join.accepted, rejoin.accepted) is written with the state, with its outbox row.
        """
        await self._hot.commit(self._join_write(_eui_hex(dev_eui), expected_version, new_state, session, event))

    def _join_write(
        self,
        eui: str,
        expected_version: int,
        state: NonceState,
        session: SessionKey | None,
        event: EventRecord | None = None,
    ) -> JoinWrite:
        """Validate a commit_join call (ValueError before anything is queued) into its storage form."""
        _check_nonce_state(state)
        if session is not None:
            _check_session(eui, state.join_nonce, session)
        kept = self._session_keys_kept
        return JoinWrite(
            eui=eui,
            expected=expected_version,
            join_nonce=state.join_nonce,
            last_dev_nonce=state.last_dev_nonce,
            used_dev_nonces=_pack_dev_nonces(state.used_dev_nonces),
            rj_count0=state.rj_count0,
            rj_count1=state.rj_count1,
            session_key_id=None if session is None else session.session_key_id.lower(),
            hsm_group=None if session is None else session.hsm_group,
            app_s_key_blob=None if session is None else session.app_s_key_blob,
            dev_nonce=None if session is None else session.dev_nonce,
            prune_upto=state.join_nonce - kept if session is not None and state.join_nonce % kept == 0 else None,
            event_id=None if event is None else event.event_id,
            event_type=None if event is None else event.type,
            event_account=None if event is None else event.account,
            event_data=None if event is None else _SORTED_JSON.encode(dict(event.data)),
        )

    async def get_session_key(self, dev_eui: bytes, session_key_id: str) -> SessionKey | None:
        """A session key of this device by SessionKeyID; None if unknown or already pruned."""
        async with self._reader.connect() as conn:
            result = await conn.execute(
                _GET_SESSION, {"p_id": session_key_id.lower(), "p_dev_eui": _eui_hex(dev_eui)}
            )
            row = result.first()
        if row is None:
            return None
        return SessionKey(
            session_key_id=row.session_key_id,
            dev_eui=bytes.fromhex(row.dev_eui),
            hsm_group=row.hsm_group,
            app_s_key_blob=bytes(row.app_s_key_blob),
            join_nonce=row.join_nonce,
            dev_nonce=row.dev_nonce,
        )

    async def add_network_server(self, ns: NetworkServer) -> None:
        """Register a network server; `NetworkServerExists` if its NetID, token or cert is taken."""
        row = {
            "net_id": _net_id_hex(ns.net_id),
            "name": ns.name,
            "kek_label": ns.kek_label,
            "token_hash": _optional_sha256_hex(ns.token_hash, "token_hash"),
            "cert_fingerprint": _optional_sha256_hex(ns.cert_fingerprint, "cert_fingerprint"),
            "answer_url": ns.answer_url,
            "async_mode": ns.async_mode,
        }
        try:
            async with self._writer.begin() as conn:
                await conn.execute(insert(network_servers), row)
        except IntegrityError as exc:
            raise NetworkServerExists(
                f"network server {row['net_id']} clashes with a registered NetID, token or certificate"
            ) from exc

    async def get_network_server(self, net_id: bytes) -> NetworkServer | None:
        """The network server with this NetID."""
        return await self._one_ns(_NS_BY_NET_ID, _net_id_hex(net_id))

    async def network_server_by_token_hash(self, token_hash: str) -> NetworkServer | None:
        """The network server whose bearer token hashes (SHA-256, hex) to `token_hash`."""
        return await self._one_ns(_NS_BY_TOKEN, token_hash.lower())

    async def network_server_by_cert(self, fingerprint: str) -> NetworkServer | None:
        """The network server whose TLS client certificate has this SHA-256 fingerprint (hex)."""
        return await self._one_ns(_NS_BY_CERT, fingerprint.lower())

    async def list_network_servers(self) -> list[NetworkServer]:
        """All network servers in NetID order."""
        async with self._reader.connect() as conn:
            return [_ns_from_row(row) for row in await conn.execute(_LIST_NS)]

    async def remove_network_server(self, net_id: bytes) -> None:
        """Forget a network server; `NotFound` if it is not registered."""
        await self._change_one(
            delete(network_servers).where(network_servers.c.net_id == _net_id_hex(net_id)),
            "network server",
            net_id,
        )

    async def _one_ns(self, statement: Executable, key: str) -> NetworkServer | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(statement, {"p_key": key})).first()
        return None if row is None else _ns_from_row(row)

    async def _change_one(
        self, statement: Update | Delete, what: str, key: bytes, params: dict[str, Any] | None = None
    ) -> None:
        async with self._writer.begin() as conn:
            if (await conn.execute(statement, params)).rowcount != 1:
                raise NotFound(f"{what} {key.hex()} not found")


def _check_nonce_state(state: NonceState) -> None:
    if not 0 < state.join_nonce <= _MAX_JOIN_NONCE:
        raise ValueError(f"JoinNonce {state.join_nonce} is outside 1..0xFFFFFF")
    for name in ("last_dev_nonce", "rj_count0", "rj_count1"):
        value = getattr(state, name)
        if value is not None and not 0 <= value <= _MAX_U16:
            raise ValueError(f"{name} {value} is outside 0..0xFFFF")


def _check_session(eui: str, join_nonce: int, session: SessionKey) -> None:
    if session.dev_eui.hex() != eui:
        raise ValueError("the session key belongs to another device")
    if session.join_nonce != join_nonce:
        raise ValueError("the session key was not derived with the JoinNonce being committed")
    if len(session.session_key_id) != 32 or not _is_hex(session.session_key_id):
        raise ValueError("session_key_id must be 32 hex digits")
    if not 0 <= session.dev_nonce <= _MAX_U16:
        raise ValueError(f"DevNonce {session.dev_nonce} is outside 0..0xFFFF")


def _pack_dev_nonces(values: Sequence[int]) -> bytes:
    kept = values[-MAX_USED_DEV_NONCES:]
    try:
        return struct.pack(f">{len(kept)}H", *kept)
    except struct.error as exc:
        raise ValueError(f"used DevNonces must be 16-bit values: {exc}") from exc


def _unpack_dev_nonces(blob: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(blob) // 2}H", blob)


def _device_row(d: NewDevice) -> dict[str, Any]:
    if not d.app_key_blob:
        raise ValueError("app_key_blob is required")
    if not d.mac_version or not d.hsm_group:
        raise ValueError("mac_version and hsm_group are required")
    return {
        "dev_eui": _eui_hex(d.dev_eui),
        "join_eui": _eui_hex(d.join_eui),
        "mac_version": d.mac_version,
        "hsm_group": d.hsm_group,
        "app_key_blob": d.app_key_blob,
        "nwk_key_blob": d.nwk_key_blob,
        "home_net_id": None if d.home_net_id is None else _net_id_hex(d.home_net_id),
        "astk_label": d.astk_label,
        "owner_account": d.owner_account,
        "name": d.name,
    }


def _device_from_row(row: Sequence[Any]) -> Device:
    """A row with the columns of `_SELECT_DEVICES`, in order (a Core row or a driver's tuple/record)."""
    (dev_eui, join_eui, mac_version, hsm_group, app_key, nwk_key, home_net_id, astk_label, owner, name,
     version, join_nonce, last_dev_nonce, used, rj_count0, rj_count1) = row
    return Device(
        bytes.fromhex(dev_eui),
        bytes.fromhex(join_eui),
        mac_version,
        hsm_group,
        bytes(app_key),
        None if nwk_key is None else bytes(nwk_key),
        None if home_net_id is None else bytes.fromhex(home_net_id),
        astk_label,
        owner,
        name,
        NonceState(version, join_nonce, last_dev_nonce, _unpack_dev_nonces(used), rj_count0, rj_count1),
    )


def _ns_from_row(row: Any) -> NetworkServer:
    return NetworkServer(
        net_id=bytes.fromhex(row.net_id),
        name=row.name,
        kek_label=row.kek_label,
        token_hash=row.token_hash,
        cert_fingerprint=row.cert_fingerprint,
        answer_url=row.answer_url,
        async_mode=bool(row.async_mode),
    )


def _eui_hex(value: bytes) -> str:
    if len(value) != 8:
        raise ValueError(f"an EUI is 8 bytes, got {len(value)}")
    return value.hex()


def _net_id_hex(value: bytes) -> str:
    if len(value) != 3:
        raise ValueError(f"a NetID is 3 bytes, got {len(value)}")
    return value.hex()


def _optional_sha256_hex(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if len(value) != 64 or not _is_hex(value):
        raise ValueError(f"{name} must be a SHA-256 digest in hex (64 digits)")
    return value.lower()


def _is_hex(value: str) -> bool:
    return _HEX.fullmatch(value) is not None


def _chunks(items: Iterable[NewDevice], size: int) -> Iterator[list[NewDevice]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
