"""Strict reading of request bodies, path and query parameters; every refusal names its field.

Bodies are strict JSON objects (UTF-8, no duplicate members, bounded nesting: `jsd.bodies`) with known
members only (a typo is an error, not a silently ignored field), read within ``server.body_timeout``. Hex
follows the service's rules (any case, optional 0x, exact length) by calling its parsers.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from jsd.bodies import BodyTimeout, JsonRefused, loads, read_body
from jsd.ownership.model import FieldError, InvalidRequest
from jsd.ownership.parse import parse_eui, parse_net_id

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_CURSOR = 2**63 - 1
"""The API's cursor range for audit ids and event seqs: signed 64-bit."""


def invalid(field: str | None, reason: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {reason}" if field else reason, errors=[FieldError(field, reason)])


async def json_object(request: web.Request, allowed: Collection[str]) -> dict[str, Any]:
    """The body as a JSON object with no member outside `allowed` (an empty body counts as ``{}``)."""
    try:
        raw = await read_body(request)
    except BodyTimeout:
        raise web.HTTPRequestTimeout(reason="the body did not arrive in time") from None
    if not raw.strip():
        return {}
    try:
        body = loads(raw)
    except JsonRefused as exc:
        raise invalid(None, str(exc)) from None
    if not isinstance(body, dict):
        raise invalid(None, "body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        errors = [FieldError(name[:64], "unknown field") for name in unknown[:20]]
        raise InvalidRequest(f"unknown field(s): {', '.join(e.field or '' for e in errors)}", errors=errors)
    return body


def check_types(body: dict[str, Any], types: Mapping[str, type]) -> None:
    """Each member present (and not null) has its JSON type: text is a string, a flag a boolean."""
    errors = [
        FieldError(name, "must be true or false" if expected is bool else "must be a string")
        for name, expected in types.items()
        if body.get(name) is not None and not isinstance(body[name], expected)
    ]
    if errors:
        raise InvalidRequest("; ".join(f"{e.field}: {e.reason}" for e in errors), errors=errors)


def required_str(body: dict[str, Any], name: str, max_length: int = 256) -> str:
    if name not in body or body[name] is None:
        raise invalid(name, "is required")
    return _string(body[name], name, max_length)


def optional_str(body: dict[str, Any], name: str, max_length: int = 256) -> str | None:
    value = body.get(name)
    return None if value is None else _string(value, name, max_length)


def _string(value: Any, name: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    if len(value) > max_length:
        raise invalid(name, f"must be at most {max_length} characters")
    return value


def nullable_member(body: dict[str, Any], name: str) -> Any:
    """A member that must be present but may be null (``{"net_id": null}`` clears, ``{}`` is an error)."""
    if name not in body:
        raise invalid(name, "is required (null clears it)")
    return body[name]


def eui(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise invalid(field, "must be a string of 16 hex digits")
    return parse_eui(value, field)


def net_id(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise invalid(field, "must be a string of 6 hex digits")
    return parse_net_id(value, field)


def path(request: web.Request, name: str, parse: Callable[[Any, str], bytes]) -> bytes:
    return parse(request.match_info[name], name)


def query_limit(request: web.Request) -> int:
    value = query_int(request, "limit")
    if value is None:
        return DEFAULT_LIMIT
    if not 1 <= value <= MAX_LIMIT:
        raise invalid("limit", f"must be between 1 and {MAX_LIMIT}")
    return value


def query_int(request: web.Request, name: str) -> int | None:
    raw = _query(request, name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_CURSOR:
        raise invalid(name, f"must be an integer from 0 to {MAX_CURSOR}")
    return int(raw)


def query_eui(request: web.Request, name: str) -> bytes | None:
    raw = _query(request, name)
    return None if raw is None else eui(raw, name)


def query_str(request: web.Request, name: str, max_length: int = 64) -> str | None:
    raw = _query(request, name)
    if raw is not None and len(raw) > max_length:
        raise invalid(name, f"must be at most {max_length} characters")
    return raw


def _query(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise invalid(name, "must be given once")
    if not values or values[0] == "":
        return None
    return values[0]
