"""Persistence for the Join Server: devices, nonce state, network servers, session keys.

Same code on SQLite (aiosqlite) and PostgreSQL (asyncpg); the schema is managed by the alembic
migrations shipped in `migrations/`, applied with `migrate()`.
"""

from jsd.registry.engine import create_engine, read_only, writes_first
from jsd.registry.errors import (
    DeviceExists,
    NetworkServerExists,
    NonceConflict,
    NotFound,
    RegistryError,
    Unavailable,
    is_unavailable,
)
from jsd.registry.migrate import migrate
from jsd.registry.models import Device, NetworkServer, NewDevice, NonceState, SessionKey
from jsd.registry.registry import MAX_USED_DEV_NONCES, SESSION_KEYS_KEPT, Registry

__all__ = [
    "MAX_USED_DEV_NONCES",
    "SESSION_KEYS_KEPT",
    "Device",
    "DeviceExists",
    "NetworkServer",
    "NetworkServerExists",
    "NewDevice",
    "NonceConflict",
    "NonceState",
    "NotFound",
    "Registry",
    "RegistryError",
    "SessionKey",
    "Unavailable",
    "create_engine",
    "is_unavailable",
    "migrate",
    "read_only",
    "writes_first",
]
