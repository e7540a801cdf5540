"""Registry errors: storage facts only; the join layer decides what they mean on the wire."""

from __future__ import annotations

import socket
import sqlite3

from sqlalchemy import exc as sa_exc

__all__ = [
    "DeviceExists",
    "NetworkServerExists",
    "NonceConflict",
    "NotFound",
    "RegistryError",
    "Unavailable",
    "is_timeout",
    "is_unavailable",
]


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


class Unavailable(RegistryError):
    """The database cannot be reached now, or the connection broke during the call: try again later."""


def is_unavailable(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception that caused it, says the database is out of reach rather than a bug.

    True for connection errors of the network and of the drivers (asyncpg's connection and operator
    intervention errors, such as a terminated backend or a server shutting down), what SQLAlchemy saw as a
    disconnect, a pool timeout, and SQLite still busy after its busy timeout. Not for an SQL error such as a
    missing table: that is a bug, not a reason to try again.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, Unavailable | ConnectionError | TimeoutError | socket.gaierror | sa_exc.TimeoutError):
            return True
        if type(exc) is OSError:  # asyncio's "Multiple exceptions: [Errno 111] ..." when every address refused
            return True
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF in _SQLITE_BUSY:
            return True
        if _asyncpg_unavailable(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def is_timeout(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception that caused it, is a call that got no answer in time (a statement
    timeout: the server may still have carried it out). SQLAlchemy's pool timeout is not one: nothing was sent."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_SQLITE_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _asyncpg_unavailable(exc: BaseException) -> bool:
    try:
        from asyncpg import exceptions as pg  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    return isinstance(exc, pg.PostgresConnectionError | pg.OperatorInterventionError | pg.InterfaceError)
