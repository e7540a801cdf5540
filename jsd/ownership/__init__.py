"""The ownership workflow, one service per aggregate, each with its store (docs/design.md, "jsd.ownership").

Transports (REST in `jsd.api`, the console in `jsd.ui`, MQTT commands in `jsd.events`, the local CLI) receive
one `Ownership` and call its services with a `Principal`; each service decides what that principal may see
and do (docs/api.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from jsd.hsm import Hsm
from jsd.ownership.accounts import AccountService
from jsd.ownership.astks import AstkService
from jsd.ownership.claims import ClaimService
from jsd.ownership.devices import DEVICE_STATES, DeviceService
from jsd.ownership.journal import JournalService, event_view
from jsd.ownership.model import *  # noqa: F403 - the values and errors are this package's surface
from jsd.ownership.model import __all__ as _model_all
from jsd.ownership.networks import NetworkService
from jsd.ownership.rules import OwnershipPolicy, token_hash
from jsd.registry import Registry
from jsd.registry.stores import OwnershipStores

__all__ = [
    *_model_all,
    "DEVICE_STATES",
    "AccountService",
    "AstkService",
    "ClaimService",
    "DeviceService",
    "JournalService",
    "NetworkService",
    "Ownership",
    "OwnershipPolicy",
    "OwnershipStores",
    "event_view",
    "token_hash",
]


@dataclass(frozen=True)
class Ownership:
    """The services the transports call, one per aggregate."""

    accounts: AccountService
    devices: DeviceService
    claims: ClaimService
    astks: AstkService
    networks: NetworkService
    journal: JournalService

    @classmethod
    def build(cls, stores: OwnershipStores, registry: Registry, hsm: Hsm, policy: OwnershipPolicy) -> Ownership:
        """The one place the services are wired to their stores, the registry and the HSM."""
        return cls(
            accounts=AccountService(stores.accounts),
            devices=DeviceService(stores.devices, stores.astks, stores.journal, registry, hsm, policy),
            claims=ClaimService(stores.devices, stores.claims, hsm, policy),
            astks=AstkService(stores.astks, hsm),
            networks=NetworkService(registry, stores.roaming, stores.journal, hsm),
            journal=JournalService(stores.journal),
        )
