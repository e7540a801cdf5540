"""Log lines quote peers' strings: in both formats they can neither forge a line nor grow without bound."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from jsd.logs import MAX_MESSAGE, MAX_VALUE, JsonFormatter, PlainFormatter

FORGED = "JoinReq\n2026-01-01 00:00:00,000 INFO    jsd.lbi: lbi JoinReq result=Success\r\x1b[2J"


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("jsd.lbi", logging.INFO, __file__, 1, msg, args, None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


@pytest.mark.parametrize("formatter", [PlainFormatter(), JsonFormatter()], ids=["plain", "json"])
def test_control_characters_cannot_forge_lines(formatter: logging.Formatter) -> None:
    line = formatter.format(record("lbi %s", FORGED, message_type=FORGED, result="MalformedRequest"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    if isinstance(formatter, JsonFormatter):
        entry = json.loads(line)
        assert "\n" not in entry["msg"] and "\n" not in entry["message_type"]
        assert entry["msg"].startswith("lbi JoinReq\\n2026")
    else:
        assert line.count(" result=") == 1 + line.count("result=Success")
        assert "lbi JoinReq\\n2026" in line


@pytest.mark.parametrize("formatter", [PlainFormatter(), JsonFormatter()], ids=["plain", "json"])
def test_long_strings_are_cut_with_a_marker(formatter: logging.Formatter) -> None:
    huge = "A" * 32768
    line = formatter.format(record("lbi %s", huge, message_type=huge, dev_eui=huge))
    assert len(line) < 3 * MAX_VALUE + 500
    assert f"...[+{32768 - MAX_VALUE} chars]" in line
    whole = formatter.format(record("x" * 50000))
    assert len(whole) < MAX_MESSAGE + 200 and "...[+" in whole


def test_plain_fields_cannot_be_forged_with_spaces() -> None:
    line = PlainFormatter().format(record("lbi %s", "x", message_type="JoinReq result=Success", result="MICFailed"))
    assert 'message_type="JoinReq result=Success"' in line
    assert line.endswith("result=MICFailed")


def test_ordinary_lines_are_unchanged() -> None:
    line = PlainFormatter().format(record("worker %d listening on %s:%s", 0, "127.0.0.1", 8090, request_id="ab-1"))
    assert line.endswith("jsd.lbi: worker 0 listening on 127.0.0.1:8090 request_id=ab-1")
    entry = json.loads(JsonFormatter().format(record("lbi %s", "JoinReq", transaction_id=7, dev_eui="0102")))
    assert (entry["msg"], entry["transaction_id"], entry["dev_eui"]) == ("lbi JoinReq", 7, "0102")


def test_debug_level_does_not_quote_sql_parameters(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """At level debug a real aiosqlite connection writes nothing: its lines would carry the SQL parameters."""
    import asyncio

    import aiosqlite

    from jsd.logs import setup_logging

    secret = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"

    async def query() -> None:
        async with aiosqlite.connect(str(tmp_path / "x.sqlite3")) as db:
            await db.execute("CREATE TABLE t (v TEXT)")
            await db.execute("INSERT INTO t VALUES (?)", (secret,))

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("plain", "debug")
        logging.getLogger("jsd.test").debug("debug lines of our own still come")
        asyncio.run(query())
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capfd.readouterr().err
    assert "debug lines of our own still come" in err
    assert secret not in err and "aiosqlite" not in err


def test_malformed_http_from_a_client_is_a_warning_and_a_handler_failure_an_error(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A real aiohttp server: a request with two Content-Lengths must not raise an error line; a crash must."""
    import asyncio

    from aiohttp import web

    from jsd.logs import setup_logging

    async def crash(_request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    async def exchange(port: int, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        answer = await reader.read()
        writer.close()
        return answer

    async def scenario() -> tuple[bytes, bytes]:
        app = web.Application()
        app.router.add_post("/", crash)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            bad = await exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
            failed = await exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        finally:
            await runner.cleanup()
        return bad, failed

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("json", "info")
        bad, failed = asyncio.run(scenario())
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert bad.startswith(b"HTTP/1.0 400") and failed.startswith(b"HTTP/1.1 500")
    entries = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    client = [e for e in entries if e.get("error") == "BadHttpMessage"]
    crashed = [e for e in entries if e.get("error") == "RuntimeError"]
    assert [(e["level"], e["msg"]) for e in client] == [("warning", "malformed HTTP request from 127.0.0.1, answered 400")]
    assert [e["level"] for e in crashed] == ["error"]


def test_the_time_stamps_are_loggings_own_across_seconds() -> None:
    """The date and time are made once a second; every line still carries its own milliseconds."""
    plain, default, as_json = PlainFormatter(), logging.Formatter(), JsonFormatter()
    for created in (1_790_000_000.001, 1_790_000_000.999, 1_790_000_001.5, 1_790_000_000.25, 1_790_086_400.0):
        made = record("tick")
        made.created, made.msecs = created, int((created - int(created)) * 1000) + 0.0
        assert plain.format(made).startswith(default.formatTime(made) + " INFO ")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(made.msecs):03d}Z"
        assert json.loads(as_json.format(made))["ts"] == stamp


def test_lean_records_print_the_same_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker leaves the caller's place, thread and process out of its records: no formatter prints them."""
    from jsd.logs import lean_records

    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))
    made: list[logging.LogRecord] = []
    logger = logging.getLogger("jsd.test.lean")
    monkeypatch.setattr(logger, "isEnabledFor", lambda level: True)
    monkeypatch.setattr(logger, "handle", made.append)
    for _ in range(2):
        logger.info("lbi %s", "JoinReq", extra={"request_id": "r 1", "status": 200, "latency_ms": 1.5})
        lean_records()
    full, lean = made
    assert (lean.lineno, lean.threadName, lean.process) == (0, None, None) and full.lineno > 0
    lean.created, lean.msecs = full.created, full.msecs
    for formatter in (PlainFormatter(), JsonFormatter()):
        assert formatter.format(lean) == formatter.format(full)
