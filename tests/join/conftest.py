"""A join service over real parts: a SQLite file migrated like production, the session's SoftHSM2 token,
and devices played by ``jsd_sim`` (its own key code, nothing shared with the daemon)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from jsd.hsm import Hsm
from jsd.join import JoinParams, JoinPolicy, JoinService, KeyEnvelope, Refusal, Sender
from jsd.lorawan import parse_mac_version
from jsd.registry import NewDevice, NonceState, Registry, create_engine, migrate
from jsd.registry.journal import AuditRecord, EventRecord, Journal
from jsd.registry.networks import RoamingStore
from jsd_sim import SimDevice

JOIN_EUI = bytes.fromhex("70b3d57ed0000001")
HOME = bytes.fromhex("000013")
VISITED = bytes.fromhex("00002a")


def refusal_name(refusal: Refusal) -> str:
    """A protocol's name for a refusal, as a transport would pass it (the events must carry exactly this)."""
    return f"test:{refusal.reason.value}"


@dataclass
class Dev:
    sim: SimDevice
    astk: bytes | None


@dataclass
class JoinWorld:
    """The registry, journal and HSM one service works on, and shortcuts an operator would use."""

    registry: Registry
    journal: Journal
    roaming: RoamingStore
    hsm: Hsm
    keks: dict[str, bytes]
    home: Sender

    def service(self, **policy: Any) -> JoinService:
        return JoinService(self.registry, self.hsm, JoinPolicy(**policy), self.journal, self.roaming)

    async def sender(self, net_id: bytes) -> Sender:
        label = f"ns-{net_id.hex()}-{uuid.uuid4().hex[:6]}"
        self.keks[label] = secrets.token_bytes(16)
        await self.hsm.import_kek(label, self.keks[label])
        return Sender(net_id, label)

    async def device(self, version: str, *, home: bytes | None = HOME, astk: bool = True) -> Dev:
        dev_eui = secrets.token_bytes(8)
        app_key, astk_key = secrets.token_bytes(16), secrets.token_bytes(16) if astk else None
        nwk_key = secrets.token_bytes(16) if version == "1.1" else None
        label = None
        if astk_key is not None:
            label = f"astk-{uuid.uuid4().hex[:8]}"
            await self.hsm.import_kek(label, astk_key)
            self.keks[label] = astk_key
        await self.registry.add_device(
            NewDevice(
                dev_eui=dev_eui,
                join_eui=JOIN_EUI,
                mac_version=version,
                hsm_group="default",
                app_key_blob=await self.hsm.import_root_key("default", app_key),
                nwk_key_blob=await self.hsm.import_root_key("default", nwk_key) if nwk_key else None,
                home_net_id=home,
                astk_label=label,
                owner_account=None,
                name=None,
            )
        )
        return Dev(SimDevice(dev_eui, JOIN_EUI, version, app_key, nwk_key), astk_key)

    async def nonces(self, dev: Dev) -> NonceState:
        device = await self.registry.get_device(dev.sim.dev_eui)
        assert device is not None
        return device.nonces

    async def set_join_nonce(self, dev: Dev, join_nonce: int) -> None:
        state = await self.nonces(dev)
        await self.registry.commit_join(dev.sim.dev_eui, state.version, replace(state, join_nonce=join_nonce), None)

    async def events(self, dev: Dev) -> list[EventRecord]:
        return await self.journal.events(account=None, after=None, limit=100, dev_eui=dev.sim.dev_eui.hex())

    async def allow_roaming(self, home: bytes, visited: bytes) -> None:
        audit = AuditRecord(account=None, key_id=None, source="test", action="roaming.added")
        assert await self.roaming.add_roaming(home.hex(), visited.hex(), audit)

    def unwrap(self, envelope: KeyEnvelope) -> bytes:
        """A key as its receiver reads it: the NS with its KEK, the application server with its ASTK."""
        return aes_key_unwrap(self.keks[envelope.kek_label], envelope.aes_key)


def params(dev: Dev, phy: bytes, mac_version: str | None = None, **changes: Any) -> JoinParams:
    """What an NS sends with the request, decoded."""
    base = JoinParams(
        mac_version=parse_mac_version(mac_version or dev.sim.mac_version),
        phy_payload=phy,
        dev_eui=dev.sim.dev_eui,
        dev_addr=bytes.fromhex("26011bda"),
        dl_settings=0,
        rx_delay=1,
        cf_list=None,
    )
    return replace(base, **changes)


@pytest.fixture
async def world(hsm: Hsm, tmp_path: Path) -> AsyncIterator[JoinWorld]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'jsd.sqlite3'}")
    await migrate(engine)
    keks: dict[str, bytes] = {}
    made = JoinWorld(Registry(engine), Journal(engine), RoamingStore(engine), hsm, keks, Sender(HOME, ""))
    made.home = await made.sender(HOME)
    try:
        yield made
    finally:
        await engine.dispose()
