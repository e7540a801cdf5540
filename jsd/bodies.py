"""Request bodies (LBI and /api/v1): read within a deadline, then parsed as strict JSON.

A client that sends headers and then drips or stops its body would otherwise hold a connection, a handler
and the graceful shutdown for as long as it likes: `read_body` gives it ``server.body_timeout`` seconds.

Strict JSON: UTF-8 only, bounded nesting, one value per member name.

``json.loads`` on bytes guesses UTF-16/32 from NUL bytes, takes the last of two equal member names, accepts
``NaN`` and ``Infinity``, keeps lone surrogates from ``\\ud800`` escapes, and recurses once per nesting level,
so a 10 KB body of brackets ends in ``RecursionError``. RFC 8259 §8.1 (UTF-8 between systems), §4 (names
should be unique) and §9 (a parser may limit nesting) allow refusing all of that. The checks are cheap on a
normal body: the parser's own recursion limit is caught, and the depth walk over the parsed value only runs
when counting brackets (one C-level pass) finds more than ``MAX_DEPTH`` of them.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, TypeVar

from aiohttp import web

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted; LBI messages use 2, API bodies 2."""

_BOM = b"\xef\xbb\xbf"
_LONE_SURROGATE_HINT = re.compile(rb"\\u[dD][89abcdefABCDEF]")


ResponseT = TypeVar("ResponseT", bound=web.StreamResponse)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
"""Seconds a client has to send a whole request body (``server.body_timeout``), set on the root app."""


class BodyTimeout(Exception):
    """The body did not arrive within the deadline; answer 408 and close the connection."""


async def read_body(request: web.Request) -> bytes:
    """The whole body, or ``BodyTimeout`` once ``server.body_timeout`` has passed (413 still raised as usual).

    A body already received whole (an LBI message mostly arrives with its headers) is read without a timer.
    """
    if request.content.is_eof():
        return await request.read()
    try:
        async with asyncio.timeout(request.config_dict[BODY_TIMEOUT]):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout from None


async def answer_and_close(request: web.Request, response: ResponseT) -> ResponseT:
    """Send `response`, then close the connection at once.

    After a body timeout the rest of the body may never come; aiohttp would otherwise keep reading it for its
    lingering time (10 s) before closing, holding the connection and a stop of the worker that long.
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


class JsonRefused(ValueError):
    """The body is not acceptable JSON; the text says why without quoting more than a member name."""


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed value, counted without recursion and stopping once past `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise JsonRefused(f"member {name[:64]!r} appears more than once")
            seen.add(name)
    return result


def _constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON number")


# Built once: json.loads with hooks builds a decoder per call, which costs more than the parse of an LBI message.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)


def loads(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of `raw`; raises ``JsonRefused`` for anything RFC 8259 lets a receiver refuse."""
    if raw.startswith(_BOM):
        raise JsonRefused("body must be UTF-8 JSON without a byte order mark")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonRefused("body is not UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except JsonRefused:
        raise
    except RecursionError:
        raise JsonRefused(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError:
        raise JsonRefused("body is not JSON") from None
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth(value, max_depth) > max_depth:
        raise JsonRefused(f"JSON nested deeper than {max_depth} levels")
    if _LONE_SURROGATE_HINT.search(raw):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JsonRefused("a string holds an unpaired UTF-16 surrogate escape") from None
    return value
