"""The stores of the ownership workflow on one engine, made together (`jsd.ownership.Ownership.build` takes them)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from jsd.registry.accounts import AccountStore
from jsd.registry.astks import AstkStore
from jsd.registry.claims import ClaimStore
from jsd.registry.devices import DeviceStore
from jsd.registry.journal import Journal
from jsd.registry.networks import RoamingStore

__all__ = ["OwnershipStores"]


@dataclass(frozen=True)
class OwnershipStores:
    """The ownership stores on one database engine; `journal` and `roaming` also serve the join path."""

    accounts: AccountStore
    devices: DeviceStore
    claims: ClaimStore
    astks: AstkStore
    roaming: RoamingStore
    journal: Journal

    @classmethod
    def on(cls, engine: AsyncEngine) -> OwnershipStores:
        return cls(
            AccountStore(engine), DeviceStore(engine), ClaimStore(engine), AstkStore(engine), RoamingStore(engine),
            Journal(engine),
        )  # fmt: skip
