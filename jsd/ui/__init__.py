"""The web console under /ui/: server-rendered pages on the same services as the REST API.

Subscribers claim and commission devices, device makers upload device files, operators manage network
servers, roaming, accounts, users and API keys. Every form works without JavaScript; the small script in
static/ only adds live join updates and upload progress. See docs/console.md.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from jsd.config import ConfigError, Settings
from jsd.ownership import Ownership
from jsd.registry.console import ConsoleStore
from jsd.ui.auth import ConsoleAuth, SignInPolicy
from jsd.ui.pages import add_routes as _add_views
from jsd.ui.site import CONSOLE, Brand, Console, console_middleware, templates

__all__ = ["PREFIX", "brand", "setup"]

PREFIX = "/ui"
STATIC = Path(__file__).with_name("static")
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def brand(settings: Settings) -> Brand:
    """The operator's branding from ``[console]``; a bad colour or a missing logo file is a config error."""
    colour = settings.get("console", "accent_color")
    if not _COLOUR.fullmatch(colour):
        raise ConfigError("console.accent_color must be a colour like '#0b63ce'")
    logo = settings.get("console", "logo_file")
    if logo and not Path(logo).is_file():
        raise ConfigError(f"console.logo_file {logo!r} is not a file")
    return Brand(product_name=settings.get("console", "product_name"), accent_color=colour, logo_file=logo)


def setup(
    app: web.Application,
    settings: Settings,
    service_key: web.AppKey[Ownership],
    store_key: web.AppKey[ConsoleStore],
) -> None:
    """Mount the console on `app` (after the contexts that set `service_key` and `store_key`)."""
    if not settings.get("console", "enabled"):
        return
    branding = brand(settings)
    ui = web.Application(middlewares=[console_middleware])

    async def console_ctx(_: web.Application) -> AsyncIterator[None]:
        policy = SignInPolicy(
            session_lifetime=settings.get("console", "session_lifetime"),
            failures_per_user=settings.get("console", "signin_failures_per_user"),
            failures_per_address=settings.get("console", "signin_failures_per_address"),
            window=settings.get("console", "signin_window"),
        )
        store = app[store_key]
        service = app[service_key]
        state = Console(
            service=service,
            auth=ConsoleAuth(store, service, policy),
            store=store,
            brand=branding,
            secure_cookies=bool(settings.get("server", "tls_cert")) or settings.get("console", "secure_cookies"),
            templates=templates(),
            session_lifetime=policy.session_lifetime,
        )
        app[CONSOLE] = state
        yield
        # Uploads still running are stopped and waited for here, so that their rollback and job record are
        # written before the database this context depends on is closed (not on a pool made after it).
        running = list(state.tasks)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    app.cleanup_ctx.append(console_ctx)
    _add_views(ui)
    ui.router.add_static("/static/", STATIC, append_version=True)
    app.add_subapp(PREFIX, ui)

    async def to_console(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(PREFIX + "/")

    app.router.add_get("/", to_console)
    app.router.add_get(PREFIX, to_console)
