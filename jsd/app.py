"""Composition root: builds the aiohttp application from settings; one cleanup context per resource.

Order of setup (teardown mirrors it): database engine and registry, HSM session, join service, the HTTP
client for asynchronous answers, then in one process only the MQTT events and commands. aiohttp runs a
cleanup only when its setup finished.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

import jsd.events
from jsd import api, health, ui
from jsd.api.problems import UNAVAILABLE as API_UNAVAILABLE
from jsd.bodies import BODY_TIMEOUT
from jsd.config import Settings, database_url
from jsd.hsm import Hsm, HsmSettings, Pin, find_softhsm_module, load_pin
from jsd.hsm.softhsm import SOFTHSM_MODULES
from jsd.join import JoinPolicy, JoinService
from jsd.lbi import handlers
from jsd.ownership import Ownership, OwnershipPolicy, OwnershipStores
from jsd.registry import Registry, create_engine, is_unavailable
from jsd.registry.console import ConsoleStore

REGISTRY = web.AppKey("registry", Registry)
HSM = health.HSM
SETTINGS = web.AppKey("settings", Settings)
OWNERSHIP = web.AppKey("ownership", Ownership)
STORES = web.AppKey("ownership_stores", OwnershipStores)
CONSOLE_STORE = web.AppKey("console_store", ConsoleStore)


def softhsm_module() -> str:
    """The SoftHSM2 module of this machine: the one the bootstrap script found, else the usual paths."""
    return find_softhsm_module([os.environ.get("JSD_SOFTHSM_LIBRARY", ""), *SOFTHSM_MODULES])


def hsm_settings(settings: Settings) -> HsmSettings:
    """Module, token and PIN; the embedded default keeps its SoftHSM2 config and PIN in the state dir."""
    module = settings.get("hsm", "module") or softhsm_module()
    state = settings.state_dir
    embedded = not settings.get("hsm", "module")
    conf = settings.get("hsm", "softhsm_conf") or (str(state / "softhsm2.conf") if embedded else "")
    if conf:
        os.environ["SOFTHSM2_CONF"] = conf
    pin_file = settings.get("hsm", "pin_file") or (str(state / "hsm-pin") if embedded else None)
    pin: Pin = load_pin("JSD_HSM_PIN", pin_file if pin_file and Path(pin_file).exists() else None)
    return HsmSettings(
        module=module,
        token_label=settings.get("hsm", "token_label"),
        pin=pin,
        reinitialize_every=settings.get("hsm", "reinitialize_every"),
    )


def join_policy(settings: Settings) -> JoinPolicy:
    return JoinPolicy(
        join_euis=tuple(settings.get("join", "join_euis")),
        dev_nonce_history=settings.get("join", "dev_nonce_history"),
        lifetime=settings.get("join", "lifetime"),
        nonce_retries=settings.get("join", "nonce_retries"),
        home_ns_requires_agreement=settings.get("lbi", "home_ns_requires_agreement"),
    )


def ownership_policy(settings: Settings) -> OwnershipPolicy:
    join_eui = settings.get("ownership", "default_join_eui")
    return OwnershipPolicy(
        default_join_eui=bytes.fromhex(join_eui) if join_eui else None,
        default_hsm_group=settings.get("join", "default_hsm_group"),
        claim_failures_per_account=settings.get("ownership", "claim_failures_per_account"),
        claim_failures_per_source=settings.get("ownership", "claim_failures_per_source"),
        claim_failures_per_device=settings.get("ownership", "claim_failures_per_device"),
        claim_window=settings.get("ownership", "claim_window"),
        event_retention=settings.get("ownership", "event_retention"),
    )


def build_app(settings: Settings, *, events: bool = True) -> web.Application:
    """The LBI application; the database must already be migrated (``jsd serve`` does it once).

    `events`: this process runs the MQTT publisher and command subscriber (or, without a broker, the event
    retention); ``jsd serve`` sets it in exactly one worker.
    """
    app = web.Application(client_max_size=settings.get("server", "max_body_bytes"))
    app[SETTINGS] = settings
    app[handlers.MAX_BODY] = settings.get("server", "max_body_bytes")
    app[handlers.UNAVAILABLE] = app[API_UNAVAILABLE] = is_unavailable
    app[BODY_TIMEOUT] = settings.get("server", "body_timeout")

    async def registry_ctx(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(database_url(settings), command_timeout=settings.get("database", "command_timeout"))
        app[health.ENGINE] = engine
        app[REGISTRY] = Registry(engine)
        app[STORES] = OwnershipStores.on(engine)
        app[CONSOLE_STORE] = ConsoleStore(engine)
        yield
        await engine.dispose()

    async def hsm_ctx(app: web.Application) -> AsyncIterator[None]:
        hsm = await Hsm.open(hsm_settings(settings))
        app[HSM] = hsm
        yield
        await hsm.aclose()

    async def service_ctx(app: web.Application) -> AsyncIterator[None]:
        stores = app[STORES]
        app[handlers.JOIN_SERVICE] = JoinService(
            app[REGISTRY], app[HSM], join_policy(settings), stores.journal, stores.roaming
        )
        app[OWNERSHIP] = Ownership.build(stores, app[REGISTRY], app[HSM], ownership_policy(settings))
        yield

    async def answers_ctx(app: web.Application) -> AsyncIterator[None]:
        delivery = handlers.AnswerDelivery(
            budget=settings.get("lbi", "answer_timeout"),
            attempt_timeout=settings.get("lbi", "answer_attempt_timeout"),
        )
        async for _ in handlers.answer_client_ctx(app, delivery):
            yield

    # -- MQTT events and commands (jsd.events): after the services it calls, stopped before them --
    async def events_ctx(app: web.Application) -> AsyncIterator[None]:
        async with jsd.events.running(settings, app[OWNERSHIP], app[STORES].journal):
            yield

    app.cleanup_ctx.extend([registry_ctx, hsm_ctx, service_ctx, answers_ctx])
    if events:
        app.cleanup_ctx.append(events_ctx)
    handlers.add_routes(app)
    health.add_routes(app, mqtt_configured=bool(settings.get("mqtt", "host")))
    api.add_routes(app, OWNERSHIP, join_eui_required=not settings.get("ownership", "default_join_eui"))
    ui.setup(app, settings, OWNERSHIP, CONSOLE_STORE)
    return app
