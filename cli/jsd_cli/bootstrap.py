"""Local mode, in one place: the few commands that work on this machine's database and HSM, not a daemon's API.

Every command that has a REST equivalent goes through the API (jsd_cli.remote). What stays here is what has
no daemon or no key to go through yet, or no REST call at all: the HSM's set-up (``jsd hsm``), the first
operator account (``jsd accounts create`` without a key), the operator's shortcut device (``jsd devices add
--home-net-id/--astk-label``), web console users (``jsd users``) and the database operations (``jsd db``,
``backup``, ``restore``, ``rotate``). The engine, the HSM and the ownership service are built here the way
jsd.app builds them, so a change to that wiring is made once, here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from jsd_cli import output
from jsd_cli.client import ApiProblem

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from jsd.config import Settings
    from jsd.hsm import Hsm
    from jsd.ownership import Ownership, Principal
    from jsd.ui.auth import ConsoleAuth
    from jsd_cli.remote import Context

T = TypeVar("T")

LOCAL_SOURCE = "cli-local"
"""The audit log's source of what local commands do (as the operator ``_local``)."""


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a local command body; HSM, registry and database errors end it with one line and exit code 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from jsd.hsm import HsmError
    from jsd.registry import RegistryError

    try:
        return asyncio.run(coro)
    except (HsmError, RegistryError, ValueError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite database URL (None for PostgreSQL)."""
    return Path(url.split("///", 1)[-1]) if url.startswith("sqlite") else None


def engine(settings: Settings) -> AsyncEngine:
    """The daemon's engine; the embedded default's state dir is made (0700) if it is not there yet."""
    from jsd.config import database_url
    from jsd.registry import create_engine

    url = database_url(settings)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return create_engine(url)


@asynccontextmanager
async def opened(settings: Settings, hsm_needed: bool = True) -> AsyncIterator[tuple[AsyncEngine, Hsm | None]]:
    """The daemon's database engine (migrated) and, if needed, its HSM, as ``jsd serve`` prepares them."""
    from jsd.app import hsm_settings
    from jsd.hsm import Hsm
    from jsd.serve import prepare

    await prepare(settings)
    db = engine(settings)
    hsm = await Hsm.open(hsm_settings(settings)) if hsm_needed else None
    try:
        yield db, hsm
    finally:
        if hsm is not None:
            await hsm.aclose()
        await db.dispose()


@asynccontextmanager
async def opened_hsm(settings: Settings) -> AsyncIterator[Hsm]:
    """The HSM (and a migrated database beside it) for a command that needs the HSM."""
    async with opened(settings) as (_, hsm):
        assert hsm is not None
        yield hsm


def add_unowned_device(
    obj: Context, fields: dict[str, Any], home_net_id: bytes | None, astk_label: str | None, astk: bytes | None
) -> None:
    """The operator's shortcut: a device whose keys are at hand (``fields``: hex ``dev_eui``, ``join_eui``,
    ``app_key``, ``nwk_key``, and ``mac_version``, ``hsm_group``, ``name``) straight into the HSM and the
    registry, owned by no account, with its home NetID and ASTK label (the ASTK imported if it is not there).
    The API has no such call: through it a device's owner sets those after the claim."""
    from jsd.registry import NewDevice, Registry

    settings = obj.settings()
    app_key, nwk_key = bytes.fromhex(fields["app_key"]), bytes.fromhex(fields.get("nwk_key") or "")

    async def body() -> None:
        async with opened(settings) as (db, hsm):
            assert hsm is not None
            group = fields.get("hsm_group") or settings.get("join", "default_hsm_group")
            await hsm.ensure_storage_kek(group)
            if astk_label and not await hsm.has_kek(astk_label):
                if astk is None:
                    raise click.ClickException(f"ASTK {astk_label} is not in the HSM: give --astk-file")
                await hsm.import_kek(astk_label, astk)
            device = NewDevice(
                dev_eui=bytes.fromhex(fields["dev_eui"]),
                join_eui=bytes.fromhex(fields["join_eui"]),
                mac_version=fields["mac_version"],
                hsm_group=group,
                app_key_blob=await hsm.import_root_key(group, app_key),
                nwk_key_blob=await hsm.import_root_key(group, nwk_key) if nwk_key else None,
                home_net_id=home_net_id,
                astk_label=astk_label,
                owner_account=None,
                name=fields.get("name"),
            )
            await Registry(db).add_device(device)

    run(body())


@dataclass(frozen=True)
class Operator:
    """The ownership service on the local database and HSM, and the local operator who calls it."""

    service: Ownership
    principal: Principal
    engine: AsyncEngine


@asynccontextmanager
async def operator(obj: Context) -> AsyncIterator[Operator]:
    """The ownership service built as jsd.app builds it, acting as the operator ``_local``."""
    from jsd.app import ownership_policy
    from jsd.ownership import SCOPES, AccountKind, Ownership, OwnershipStores, Principal
    from jsd.registry import Registry

    settings = obj.settings()
    async with opened(settings) as (db, hsm):
        assert hsm is not None
        service = Ownership.build(OwnershipStores.on(db), Registry(db), hsm, ownership_policy(settings))
        principal = Principal(
            account="_local", kind=AccountKind.OPERATOR, scopes=frozenset(SCOPES), key_id=None, source=LOCAL_SOURCE
        )
        yield Operator(service, principal, db)


def _as_operator(obj: Context, body: Callable[[Operator], Awaitable[T]]) -> T:
    """Run ``body`` as the local operator; a refusal prints like an API problem and exits with the same code."""
    from jsd.ownership import OwnershipError

    async def call() -> T:
        async with operator(obj) as local:
            return await body(local)

    try:
        return run(call())
    except OwnershipError as exc:
        errors = [e.as_dict() for e in exc.errors]
        problem = ApiProblem(status=exc.status, problem=exc.problem, title=exc.title, detail=exc.detail, errors=errors)
        raise output.fail(problem) from None


def create_account(obj: Context, account_id: str, kind: str, name: str | None) -> dict[str, Any]:
    """An account and its first API key, made as the local operator (the first operator account), in the
    API's answer shape: ``{"account": ..., "api_key": ...}``."""
    from jsd.api import render

    async def body(local: Operator) -> dict[str, Any]:
        view, key = await local.service.accounts.create_account(local.principal, account_id, kind, name)
        return {"account": render.account(view), "api_key": render.new_api_key(key)}

    return _as_operator(obj, body)


def run_console(obj: Context, body: Callable[[ConsoleAuth, Principal], Awaitable[T]]) -> T:
    """A console-user call as the local operator (console users are not in the REST API)."""
    from jsd.registry.console import ConsoleStore
    from jsd.ui.auth import ConsoleAuth, SignInPolicy

    async def call(local: Operator) -> T:
        auth = ConsoleAuth(ConsoleStore(local.engine), local.service, SignInPolicy())
        return await body(auth, local.principal)

    return _as_operator(obj, call)
