"""Structured logs: plain text or one JSON object per line, with the request's context fields.

Callers pass context with ``extra={...}``; only the names in ``CONTEXT_FIELDS`` are emitted, so nothing
unexpected (a key, a body) can slip into a log line through ``extra``.
"""

from __future__ import annotations

import json
import logging
import sys
import time

CONTEXT_FIELDS = (
    "request_id", "message_type", "dev_eui", "net_id", "result", "status", "latency_ms", "worker",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, separators=(",", ":"))


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = [f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None) is not None]
        if record.exc_info and record.exc_info[0] is not None:
            fields.append(f"error={record.exc_info[0].__name__}")
        return base + (" " + " ".join(fields) if fields else "")


def setup_logging(fmt: str = "plain", level: str = "info") -> None:
    """Configure the root logger once per process (workers call it too)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
