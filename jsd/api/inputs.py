"""Strict reading of request bodies, path and query parameters by the wire models; every refusal names its field.

Bodies are strict JSON objects (UTF-8, no duplicate members, bounded nesting: `jsd.bodies`) with known
members only (a typo is an error, not a silently ignored field), read within ``server.body_timeout``, then
validated by their model in jsd.wire.requests, the same model the OpenAPI document shows. Query strings
have known parameters only, each given once; path parameters have their type in `PATH_TYPES`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from jsd.bodies import BodyTimeout, JsonRefused, loads, read_body
from jsd.ownership.model import FieldError, InvalidRequest
from jsd.ownership.parse import parse_eui, parse_net_id
from jsd.wire import Invalid, integer_fields, validate
from jsd.wire.requests import CLAIM_FIELDS, DEVICE_IMPORT_FIELDS, MAX_CURSOR, MAX_LIMIT, PATH_TYPES, Claim, DeviceImport

__all__ = ["DEFAULT_LIMIT", "MAX_CURSOR", "MAX_LIMIT", "body", "invalid", "path", "path_eui", "path_net_id", "query"]

DEFAULT_LIMIT = 100
M = TypeVar("M", bound=BaseModel)
# The members a union body may have: those of any of its variants.
_UNION_FIELDS: dict[type[BaseModel], frozenset[str]] = {
    DeviceImport: DEVICE_IMPORT_FIELDS,
    Claim: CLAIM_FIELDS,
}


def invalid(field: str | None, reason: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {reason}" if field else reason, errors=[FieldError(field, reason)])


def refused(exc: Invalid) -> InvalidRequest:
    """The model's refusal as the API's invalid-request problem."""
    errors = [FieldError(field, reason) for field, reason in exc.errors[:20]]
    return InvalidRequest("; ".join(f"{e.field}: {e.reason}" if e.field else e.reason for e in errors), errors=errors)


def _check(model: type[M], value: Any) -> M:
    try:
        return validate(model, value)  # type: ignore[no-any-return]
    except Invalid as exc:
        raise refused(exc) from None


async def body(request: web.Request, model: type[M]) -> tuple[M, dict[str, Any]]:
    """The body as `model`, and its members that are not null (null means left out; an empty body is ``{}``)."""
    raw = await json_object(request, _UNION_FIELDS.get(model) or model.model_fields)
    return _check(model, raw), {name: value for name, value in raw.items() if value is not None}


async def json_object(request: web.Request, allowed: Collection[str]) -> dict[str, Any]:
    """The body as a JSON object with no member outside `allowed`."""
    try:
        raw = await read_body(request)
    except BodyTimeout:
        raise web.HTTPRequestTimeout(reason="the body did not arrive in time") from None
    if not raw.strip():
        return {}
    try:
        found = loads(raw)
    except JsonRefused as exc:
        raise invalid(None, str(exc)) from None
    if not isinstance(found, dict):
        raise invalid(None, "body must be a JSON object")
    unknown = sorted(set(found) - set(allowed))
    if unknown:
        errors = [FieldError(name[:64], "unknown field") for name in unknown[:20]]
        raise InvalidRequest(f"unknown field(s): {', '.join(e.field or '' for e in errors)}", errors=errors)
    return found


def query(request: web.Request, model: type[M]) -> M:
    """The query string as `model`: known parameters, each once; integers as decimal digits."""
    fields = model.model_fields
    integers = integer_fields(model)
    unknown = sorted(set(request.query) - set(fields))
    if unknown:
        raise invalid(unknown[0][:64], "unknown parameter")
    values: dict[str, Any] = {}
    for name in request.query:
        found = request.query.getall(name)
        if len(found) > 1:
            raise invalid(name, "must be given once")
        text = found[0]
        values[name] = int(text) if name in integers and text.isascii() and text.isdigit() else text
    return _check(model, values)


def limit(page: Any) -> int:
    return DEFAULT_LIMIT if page.limit is None else int(page.limit)


def path(request: web.Request, name: str) -> str:
    """A path parameter, checked against its type."""
    try:
        return str(validate(PATH_TYPES[name], request.match_info[name]))
    except Invalid as exc:
        raise refused(Invalid([(name, reason) for _, reason in exc.errors])) from None


def path_eui(request: web.Request, name: str = "dev_eui") -> bytes:
    return parse_eui(path(request, name), name)


def path_net_id(request: web.Request, name: str = "net_id") -> bytes:
    return parse_net_id(path(request, name), name)


def eui(value: str | None, field: str) -> bytes | None:
    """A checked hex EUI member as bytes (the model has matched its pattern)."""
    return None if value is None else parse_eui(value, field)


def net_id(value: str | None, field: str) -> bytes | None:
    return None if value is None else parse_net_id(value, field)
