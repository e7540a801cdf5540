"""Structured logs: plain text or one JSON object per line, with the request's context fields.

Callers pass context with ``extra={...}``; only the names in ``CONTEXT_FIELDS`` are emitted, so nothing
unexpected (a key, a body) can slip into a log line through ``extra``.

Log lines quote what peers send (a MessageType, a URL, an HSM label), so both formats pass every message
argument and context field through `clean`: strings are cut to ``MAX_VALUE`` characters with a marker and
control characters are escaped, so a value can neither forge a line (``\n``) nor turn one request into
kilobytes of log. The whole message is then cut to ``MAX_MESSAGE``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable

CONTEXT_FIELDS = (
    "request_id", "transaction_id", "message_type", "dev_eui", "net_id", "result", "status", "latency_ms",
    "worker",
)
MAX_VALUE = 128
"""Longest string argument or context field written as is; longer ones are cut with a marker."""
QUIET_LIBRARIES = ("aiosqlite", "alembic.runtime.plugins")
"""Libraries held at warning whatever the level: aiosqlite's debug lines quote every SQL call with its
parameters (token hashes, wrapped keys, pages of rows) several times a second; alembic's plugin lines are noise."""
MAX_MESSAGE = 1024
"""Longest message written; a longer one is cut with a marker."""


def clean(value: object, limit: int = MAX_VALUE) -> object:
    """A string cut to `limit` characters (``...[+N chars]``) with control characters escaped; other values as is."""
    if not isinstance(value, str):
        return value
    if len(value) > limit:
        value = f"{value[:limit]}...[+{len(value) - limit} chars]"
    if not value.isprintable():
        value = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value)
    return value


def message(record: logging.LogRecord) -> str:
    """The record's message with each string argument cleaned, and the result cleaned and cut."""
    args = record.args
    if isinstance(args, tuple) and args:
        try:
            text = str(record.msg) % tuple(clean(a) for a in args)
        except (TypeError, ValueError):
            text = record.getMessage()
    else:
        text = record.getMessage()
    return str(clean(text, MAX_MESSAGE))


def context(record: logging.LogRecord) -> dict[str, object]:
    """The record's context fields that are set, cleaned."""
    fields: dict[str, object] = {}
    given = record.__dict__  # ``extra`` lands here; LogRecord has no class attribute of these names
    for name in CONTEXT_FIELDS:
        value = given.get(name)
        if value is not None:
            fields[name] = clean(value) if isinstance(value, str) else value
    return fields


# Built once: ``json.dumps`` with any argument builds a new encoder per call (one per log line).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class _SecondStamp:
    """``strftime`` of a record's time, made once per second rather than once per line (one per request)."""

    def __init__(self, pattern: str, convert: Callable[[float], time.struct_time]) -> None:
        self._pattern, self._convert = pattern, convert
        self._second, self._text = -1, ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # formatting runs under the handler's lock: no race between the two
            self._second, self._text = second, time.strftime(self._pattern, self._convert(created))
        return self._text


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._stamp = _SecondStamp("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": f"{self._stamp(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message(record),
        }
        entry.update(context(record))
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return _COMPACT.encode(entry)


_FORGING = re.compile('[ ="]')


def _plain_value(value: object) -> object:
    """A context value for ``name=value``: quoted when a space, quote or ``=`` could forge another field."""
    if isinstance(value, str) and (not value or _FORGING.search(value)):
        return json.dumps(value)
    return value


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._stamp = _SecondStamp(self.default_time_format, self.converter)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's default ``2026-01-01 12:00:00,123`` (local time), its date and time made once a second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return f"{self._stamp(record.created)},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {message(record)}"
        fields = [f"{name}={_plain_value(value)}" for name, value in context(record).items()]
        if record.exc_info and record.exc_info[0] is not None:
            fields.append(f"error={record.exc_info[0].__name__}")
        return base + (" " + " ".join(fields) if fields else "")


class ClientHttpErrors(logging.Filter):
    """aiohttp logs a request it could not parse (lying Content-Length, two Content-Lengths, ...) at level
    error, though it is the client's fault and answered 400: any peer could raise error lines (and pages) at
    will. Such records become warnings that say so; a handler's own exception stays an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno > logging.WARNING and type(exc).__module__ == "aiohttp.http_exceptions":
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "malformed HTTP request from %s, answered 400", record.args
        return True


def lean_records() -> None:
    """Leave out of every record what no formatter here prints: the caller's file and line (logging walks the
    stack for them), thread and process. About 2 µs of the 13 µs a request's log line costs. For the daemon's
    workers only: a test's or a tool's own log handlers may print them."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def setup_logging(fmt: str = "plain", level: str = "info") -> None:
    """Configure the root logger once per process (workers call it too)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    handler.addFilter(ClientHttpErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
