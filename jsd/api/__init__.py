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


def add_routes(app: web.Application, service_key: web.AppKey[Ownership]) -> None:
    """Mount /api/v1 on `app`; handlers find the service under `service_key` (set by the composition root)."""
    api = Api(service_key)
    sub = web.Application(middlewares=[problem_middleware])
    for method, path, name in ROUTES:
        sub.router.add_route(method, path, getattr(api, name), name=name)
    app.add_subapp(PREFIX, sub)
