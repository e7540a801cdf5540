"""``GET /healthz``, ``GET /readyz`` and ``GET /metrics``: for orchestrators and Prometheus, without credentials.

- ``/healthz``: the process answers (200). Nothing else is looked at, so a restart is only asked for when
  the worker itself is stuck.
- ``/readyz``: 200 when this worker can answer joins: the database answers and its schema is the one this
  code expects, and the HSM session works (one C_GenerateRandom). The MQTT connection is reported but is not
  a reason to be unready: events wait in the outbox. 503 otherwise, with the failed check named.
- ``/metrics``: Prometheus text format for all workers (`jsd.metrics`), plus the outbox depth and the age
  of its oldest event, read from the database at scrape time.

Answers never carry secrets: a failure is named by its exception type, not its message.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from jsd import metrics
from jsd.hsm import Hsm
from jsd.registry.ops import outbox_stats, schema_head, schema_revision

__all__ = ["ENGINE", "add_routes"]

ENGINE = web.AppKey("engine", AsyncEngine)
HSM = web.AppKey("hsm", Hsm)
_CHECK_TIMEOUT = 2.0
_HEAD = web.AppKey("schema_head", str)
_MQTT = web.AppKey("health_mqtt", bool)


def add_routes(app: web.Application, mqtt_configured: bool) -> None:
    """Register the three endpoints; the composition root puts the engine and HSM handle under ENGINE, HSM."""
    app[_HEAD] = schema_head()
    app[_MQTT] = mqtt_configured
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def _timed(check: Any) -> dict[str, Any]:
    try:
        await asyncio.wait_for(check, _CHECK_TIMEOUT)
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {_CHECK_TIMEOUT:g} s"}
    except Exception as exc:  # noqa: BLE001 - any failure makes the check fail; only its type is shown
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    engine = app[ENGINE]
    hsm = app[HSM]
    revision: dict[str, str | None] = {}

    async def database() -> None:
        revision["at"] = await schema_revision(engine)

    async def token() -> None:
        await hsm.generate_random(1)

    db_check, hsm_check = await asyncio.gather(_timed(database()), _timed(token()))
    expected = app[_HEAD]
    schema: dict[str, Any] = {"ok": db_check["ok"] and revision.get("at") == expected, "expected": expected}
    if db_check["ok"]:
        schema["revision"] = revision.get("at")
    checks: dict[str, Any] = {"database": db_check, "schema": schema, "hsm": hsm_check, "mqtt": _mqtt(app)}
    ready = db_check["ok"] and schema["ok"] and hsm_check["ok"]
    return web.json_response({"status": "ready" if ready else "unready", "checks": checks}, status=200 if ready else 503)


def _mqtt(app: web.Application) -> dict[str, Any]:
    if not app[_MQTT]:
        return {"state": "not configured", "fatal": False}
    connected = metrics.mqtt_connected()
    return {"state": "connected" if connected else "disconnected", "fatal": False}


class _Outbox(Collector):
    """The outbox as read just before the scrape."""

    def __init__(self, depth: int, age: float | None) -> None:
        self._depth, self._age = depth, age

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("jsd_outbox_events", "Events not yet acknowledged by the MQTT broker", value=self._depth)
        yield GaugeMetricFamily(
            "jsd_outbox_oldest_age_seconds",
            "Age of the oldest event waiting for the broker (0 when none waits)",
            value=self._age or 0.0,
        )


async def metrics_endpoint(request: web.Request) -> web.Response:
    extra: Collector | None = None
    try:
        depth, age = await asyncio.wait_for(outbox_stats(request.app[ENGINE]), _CHECK_TIMEOUT)
        extra = _Outbox(depth, age)
    except Exception:  # noqa: BLE001, S110 - the database is away: the process metrics are still worth serving
        extra = None
    body = await asyncio.get_running_loop().run_in_executor(None, metrics.render, extra)
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})
