"""The contract between the bridge and a network server's device registry, and how adapters are found.

The bridge knows no network server by name: it talks to an ``NsAdapter`` for one linked application.
Adapters are classes registered in the ``jsd.ns_adapters`` entry-point group whose ``from_config(options)``
builds one from the link's adapter table, so another network server (The Things Stack, a plain LBI NS) is
added by installing a package, without touching the bridge. ``jsd_chirpstack.chirpstack`` is one such adapter.

Errors the bridge acts on::

    AdapterError
     ├── AdapterUnavailable   the NS cannot be reached now: keep state, retry on the next pass
     ├── AdapterRefused       the NS refused the call (credentials, permissions, invalid value)
     └── NsDeviceExists       create found the DevEUI already registered (``device`` says how)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol

ADAPTER_GROUP = "jsd.ns_adapters"

# Tags the bridge reads and writes on network-server devices.
LINK_TAG = "jsd_link"  # value: the link name; only devices with it are ever changed or deleted by the bridge
RELEASED_TAG = "jsd_released"  # set with is_disabled when a released device stays registered
ERROR_TAG = "jsd_error"  # the last failure the operator should see on this device
OWNER_TOKEN_TAG = "owner_token"  # reverse path: an operator asks the bridge to claim this device
QR_TAG = "tr005"  # reverse path: the same with a TR005 QR-code string ("LW:D0:…")


class AdapterError(Exception):
    """A registry call failed; the text is safe to log (no tokens). ``code``: the NS's own error code, if any."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class AdapterUnavailable(AdapterError):
    """The network server did not answer (down, timeout, overloaded): the next pass retries."""


class AdapterRefused(AdapterError):
    """The network server answered with a refusal that retrying will not change."""


class NsDeviceExists(AdapterError):
    """``create_device`` found the DevEUI registered already (not ``jsd.registry.DeviceExists``: the NS's)."""

    def __init__(self, device: NsDevice) -> None:
        super().__init__(f"DevEUI {device.dev_eui.hex()} exists already")
        self.device = device


@dataclass(frozen=True)
class NsDevice:
    """A device as the network server's registry shows it (EUIs big-endian as displayed)."""

    dev_eui: bytes
    name: str
    join_eui: bytes | None
    tags: Mapping[str, str] = field(default_factory=dict)
    disabled: bool | None = None  # None when a listing does not say

    @property
    def link(self) -> str | None:
        """The bridge link that manages this device, if any."""
        return self.tags.get(LINK_TAG)


@dataclass(frozen=True)
class DeviceSpec:
    """What the bridge wants registered: no keys, ever (the NS must ask the Join Server)."""

    dev_eui: bytes
    join_eui: bytes
    name: str
    mac_version: str
    tags: Mapping[str, str]
    description: str = ""


@dataclass(frozen=True)
class DeviceChange:
    """What ``update_device`` changes; a field left None (a tag set to None: removed) keeps what the NS has."""

    tags: Mapping[str, str | None] = field(default_factory=dict)
    disabled: bool | None = None
    join_eui: bytes | None = None


class NsAdapter(ABC):
    """One linked application (or equivalent) of one network server; adapters subclass it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    @abstractmethod
    def describe(self) -> str:
        """Where this adapter points, for logs (no secrets)."""

    @abstractmethod
    async def list_devices(self) -> list[NsDevice]:
        """Every device of the linked application; the bridge selects by tags. Paced by the adapter."""

    @abstractmethod
    async def get_device(self, dev_eui: bytes) -> NsDevice | None:
        """One device with its disabled flag, or None if it is not registered there."""

    @abstractmethod
    async def create_device(self, spec: DeviceSpec) -> None:
        """Register a device without keys; raises ``NsDeviceExists`` if the DevEUI is taken."""

    async def update_device(
        self,
        dev_eui: bytes,
        *,
        tags: Mapping[str, str | None] | None = None,
        disabled: bool | None = None,
        join_eui: bytes | None = None,
    ) -> NsDevice:
        """Change only what is given (a tag set to None is removed), keeping every other field as it is."""
        return await self.change_device(dev_eui, DeviceChange(tags or {}, disabled, join_eui))

    @abstractmethod
    async def change_device(self, dev_eui: bytes, change: DeviceChange) -> NsDevice:
        """``update_device`` in one value, for adapters to implement: read, change, write back."""

    @abstractmethod
    async def delete_device(self, dev_eui: bytes) -> None:
        """Remove a device; a missing one is not an error."""

    @abstractmethod
    async def has_root_keys(self, dev_eui: bytes) -> bool:
        """Whether the NS holds root keys for the device: then it would never ask the Join Server."""

    @abstractmethod
    async def mac_version(self) -> str | None:
        """The LoRaWAN version the NS will announce for devices created here ("1.0.3", "1.1"), if known."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections."""


class AdapterFactory(Protocol):
    """What an entry point of ``jsd.ns_adapters`` names (usually the adapter class itself)."""

    def from_config(self, options: Mapping[str, Any]) -> NsAdapter: ...


def adapter_kinds() -> list[str]:
    """Names of the installed adapters."""
    return sorted(entry.name for entry in entry_points(group=ADAPTER_GROUP))


def load_adapter(kind: str, options: Mapping[str, Any]) -> NsAdapter:
    """Build the adapter registered as ``kind`` from its options; unknown kinds name the installed ones."""
    for entry in entry_points(group=ADAPTER_GROUP, name=kind):
        factory: AdapterFactory = entry.load()
        adapter = factory.from_config(options)
        if not isinstance(adapter, NsAdapter):
            raise TypeError(f"adapter {kind!r} ({entry.value}) does not implement NsAdapter")
        return adapter
    raise LookupError(f"no network-server adapter {kind!r}; installed: {', '.join(adapter_kinds()) or 'none'}")
