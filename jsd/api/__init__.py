"""The ownership REST API under /api/v1 (docs/api.md): a sub-application with its own problem middleware.

A sub-application keeps RFC 7807 answers, including the router's 404/405, to /api/v1 while the LBI routes of
the parent keep their own error bodies. The body-size limit of the parent (``server.max_body_bytes``) applies
to JSON bodies read whole; the bulk import reads its body line by line from the stream, which that limit does
not bound.
"""

from __future__ import annotations

from aiohttp import web

from jsd.api.handlers import ROUTES, Api
from jsd.api.problems import problem_middleware
from jsd.ownership import Ownership

__all__ = ["PREFIX", "add_routes"]

PREFIX = "/api/v1"
DEV_EUI_SEGMENT = "{dev_eui:(?!import$)[^/]+}"


def add_routes(
    app: web.Application, service_key: web.AppKey[Ownership], *, join_eui_required: bool = True
) -> None:
    """Mount /api/v1 on `app`; handlers find the service under `service_key` (set by the composition root).

    `join_eui_required`: no ``ownership.default_join_eui`` is configured, so the document asks every device
    for its JoinEUI. A DevEUI in a path is never the word "import", so /devices/import's methods are its own
    (its `Allow` header lists only POST).
    """
    api = Api(service_key, join_eui_required=join_eui_required)
    sub = web.Application(middlewares=[problem_middleware])
    for method, path, name in ROUTES:
        sub.router.add_route(method, path.replace("{dev_eui}", DEV_EUI_SEGMENT), getattr(api, name), name=name)
    app.add_subapp(PREFIX, sub)
