"""The ownership service on a real SoftHSM2 token and a real database (SQLite file or PostgreSQL schema)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from jsd.hsm import Hsm
from jsd.ownership import SCOPES, AccountKind, Ownership, OwnershipPolicy, OwnershipStores, Principal
from jsd.registry import Registry, create_engine

OPERATOR = Principal("_local", AccountKind.OPERATOR, frozenset(SCOPES), None, "test")


@dataclass
class World:
    service: Ownership
    registry: Registry
    stores: OwnershipStores
    maker: Principal
    alice: Principal
    bob: Principal
    hsm: Hsm
    policy: OwnershipPolicy


@pytest.fixture
async def world(database: object, hsm: Hsm) -> AsyncIterator[World]:
    engine = create_engine(database.url)  # type: ignore[attr-defined]
    registry, stores = Registry(engine), OwnershipStores.on(engine)
    policy = OwnershipPolicy(
        default_join_eui=bytes.fromhex("70b3d57ed0000000"),
        claim_failures_per_account=6,
        claim_failures_per_device=3,
    )
    service = Ownership.build(stores, registry, hsm, policy)
    principals = []
    for name, kind in (("maker", "manufacturer"), ("alice", "subscriber"), ("bob", "subscriber")):
        _, key = await service.accounts.create_account(OPERATOR, name, kind, None)
        principals.append(await service.accounts.authenticate(key.key, "test"))
    try:
        yield World(service, registry, stores, *principals, hsm, policy)
    finally:
        await engine.dispose()
