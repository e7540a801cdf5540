"""Registry errors: storage facts only; the join layer decides what they mean on the wire."""

from __future__ import annotations

__all__ = ["DeviceExists", "NetworkServerExists", "NonceConflict", "NotFound", "RegistryError"]


class RegistryError(Exception):
    """Base class, so callers can catch every registry refusal at once."""


class DeviceExists(RegistryError):
    """A device with this DevEUI is already provisioned."""


class NetworkServerExists(RegistryError):
    """The NetID, token hash or certificate fingerprint is already registered."""


class NotFound(RegistryError):
    """The row to change does not exist."""


class NonceConflict(RegistryError):
    """Another request changed the device's nonce state since it was read; re-read and retry."""
