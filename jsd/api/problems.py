"""RFC 7807 answers for everything under /api/v1, including aiohttp's own 404/405/413 and our bugs.

The middleware is installed on the API sub-application only, so the LBI routes keep their JSON Result
bodies. A bug is answered with a request id and nothing else; the log line names the exception type and
where it was raised, never its message, because a message may quote request data (keys, tokens).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from jsd.bodies import answer_and_close
from jsd.ownership.model import PROBLEM_TYPE_PREFIX, FieldError, ImportFailed, OwnershipError

log = logging.getLogger("jsd.api")

PROBLEM_CONTENT_TYPE = "application/problem+json"
# Answers may carry API keys, owner tokens or generated keys: no cache along the way keeps them.
NO_STORE = "no-store"

# Request ids: a random per-process prefix and a counter, unique across workers.
_REQUEST_PREFIX = os.urandom(4).hex()
_request_numbers = itertools.count(1)

# aiohttp's own errors (router, body size, ...) by status: (slug, title).
HTTP_PROBLEMS: dict[int, tuple[str, str]] = {
    400: ("invalid-request", "Invalid request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    408: ("request-timeout", "Request timeout"),
    413: ("payload-too-large", "Payload too large"),
    500: ("internal", "Internal error"),
    503: ("hsm-unavailable", "HSM unavailable"),
}


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    error_count: int | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """One problem document; `errors` only when given (invalid-request, an import's import-failed or conflict)."""
    body: dict[str, Any] = {"type": PROBLEM_TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = [e.as_dict() for e in errors]
    if error_count is not None:
        body["error_count"] = error_count
    return web.Response(
        status=status,
        text=json.dumps(body, separators=(",", ":")),
        content_type=PROBLEM_CONTENT_TYPE,
        headers={"Cache-Control": NO_STORE, **(headers or {})},
    )


def from_ownership_error(exc: OwnershipError) -> web.Response:
    headers: dict[str, str] = {}
    if exc.problem == "rate-limited":
        headers["Retry-After"] = str(max(1, int(exc.retry_after or 1)))
    if exc.problem == "unauthenticated":
        headers["WWW-Authenticate"] = 'Bearer realm="jsd"'
    errors: list[FieldError] | None = None
    error_count: int | None = None
    if exc.errors or exc.problem == "invalid-request":  # also a 409 that names its field (tkm_info, ...)
        errors = list(exc.errors)
    if isinstance(exc, ImportFailed):  # and ImportConflict: a file's rows, by line, maybe capped
        error_count = exc.error_count
    return problem(
        exc.status, exc.problem, exc.title, exc.detail, errors=errors, error_count=error_count, headers=headers or None
    )


def from_http_exception(exc: web.HTTPException, request: web.Request) -> web.Response:
    slug, title = HTTP_PROBLEMS.get(exc.status, ("invalid-request" if exc.status < 500 else "internal", exc.reason))
    headers: dict[str, str] = {}
    detail = exc.reason
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        detail = f"{request.method} is not allowed on this path; allowed: {headers['Allow']}"
    elif isinstance(exc, web.HTTPNotFound):
        detail = "no such resource"
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        detail = f"body larger than {request.client_max_size} bytes"
    errors: list[FieldError] | None = [] if slug == "invalid-request" else None
    return problem(exc.status, slug, title, detail, errors=errors, headers=headers or None)


def _where(exc: BaseException) -> str:
    """The innermost frame of a traceback as 'file:line in function': enough to find a bug, no data."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{os.path.relpath(last.filename)}:{last.lineno} in {last.name}"


def request_id() -> str:
    return f"{_REQUEST_PREFIX}-{next(_request_numbers):x}"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNAVAILABLE: web.AppKey[Callable[[BaseException], bool]] = web.AppKey("database_unavailable")
"""Tells an exception that means "the database is out of reach" (503) from a bug (500); set by the
composition root on the main application."""
RETRY_AFTER_UNAVAILABLE = 5


def _never(_exc: BaseException) -> bool:
    return False


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every refusal into problem JSON and log one line per API request (no bodies, no keys)."""
    started = time.perf_counter()
    rid = request_id()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers.setdefault("Cache-Control", NO_STORE)
        return response
    except OwnershipError as exc:
        response = from_ownership_error(exc)
        status = response.status
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = from_http_exception(exc, request)
        status = response.status
        if isinstance(exc, web.HTTPRequestTimeout):
            return await answer_and_close(request, response)  # the rest of the body may never come
        return response
    except Exception as exc:  # noqa: BLE001 - a bug: answer with the request id only
        if request.config_dict.get(UNAVAILABLE, _never)(exc):
            status = 503
            log.warning("api: database unavailable (%s)", type(exc).__name__, extra={"request_id": rid, "status": 503})
            return problem(
                503,
                "database-unavailable",
                "Database unavailable",
                "the Join Server's database cannot be reached now; try again",
                headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
            )
        log.error(
            "api internal error: %s at %s", type(exc).__name__, _where(exc), extra={"request_id": rid, "status": 500}
        )
        return problem(500, "internal", "Internal error", f"request id {rid}")
    finally:
        route = request.match_info.route.resource
        path = route.canonical if route is not None else "-"
        log.info(
            "api %s %s",
            request.method,
            path,
            extra={
                "request_id": rid,
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
