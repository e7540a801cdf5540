"""Console forms against broken and stalled bodies, sent over a raw socket to the real application.

A malformed multipart body is the client's fault (400 page), never a 500; a body that stops half-way gets
408 after ``server.body_timeout`` and the connection is closed, instead of holding the handler for ever.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from .conftest import PASSWORD

BODY_TIMEOUT = 1.0


@pytest.fixture
def jsd_settings() -> dict[str, Any]:
    return {"server__body_timeout": BODY_TIMEOUT}


async def exchange(server: Any, head: bytes, body: bytes, wait: float = 15.0) -> tuple[int, bytes, float]:
    """Send `head` and `body` as is; the status, what came back until the server closed, and how long it took."""
    url = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    started = time.monotonic()
    writer.write(head + b"\r\n" + body)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer, time.monotonic() - started


def head(content_type: str, length: int, *extra: str) -> bytes:
    lines = ["POST /ui/sign-in HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}",
             f"Content-Length: {length}", *extra]  # fmt: skip
    return "".join(line + "\r\n" for line in lines).encode()


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("multipart/form-data", b"--zz\r\nxx", 400),
        ("multipart/form-data; boundary=zz", b'--zz\r\nContent-Disposition: form-data; name="csrf"\r\n\r\nabc\r\n--zz\r\ngarbage', 400),
        ("multipart/form-data; boundary=zz", b'--zz\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n\xff\xfe\r\n--zz--\r\n', 400),
        ("multipart/form-data; boundary=zz", b'--zz\r\nContent-Disposition: form-data; name="u"\r\n\r\n' + b"a" * 70000 + b"\r\n--zz--\r\n", 413),
    ],
    ids=["no-boundary", "no-closing-boundary", "not-utf8", "huge-text-field"],
)
async def test_malformed_multipart_is_a_client_error_page(jsd_server: Any, content_type: str, body: bytes, status: int) -> None:
    got, answer, _ = await exchange(jsd_server, head(content_type, len(body), "Connection: close"), body)
    assert got == status, answer[:300]
    assert b"text/html" in answer and b"Traceback" not in answer


@pytest.mark.parametrize(
    ("content_type", "part"),
    [
        ("application/x-www-form-urlencoded", b"csrf=x&username=al"),
        ("multipart/form-data; boundary=zz", b'--zz\r\nContent-Disposition: form-data; name="csrf"\r\n\r\nab'),
    ],
    ids=["urlencoded", "multipart"],
)
async def test_a_stalled_form_body_is_cut_off_at_the_body_timeout(jsd_server: Any, content_type: str, part: bytes) -> None:
    status, answer, took = await exchange(jsd_server, head(content_type, len(part) + 500), part)
    assert status == 408, answer[:300]
    assert BODY_TIMEOUT <= took < BODY_TIMEOUT + 5, took  # answered, and the connection closed, without lingering
    assert b"did not arrive in time" in answer


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_claim_brute_force_in_the_console_gets_429_with_retry_after(console: Any) -> None:
    """Wrong tokens typed into the claim form until refused: 429, a Retry-After, and the wait said rightly."""
    await console.account("guess-co", "subscriber")
    await console.user("guess-co", "guesser")
    dev_eui, _ = await console.maker_device("maker-co")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        async with client.get(console.url + "sign-in") as r:
            csrf = _csrf(await r.text())
        signed = {"csrf": csrf, "username": "guesser", "password": PASSWORD}
        async with client.post(console.url + "sign-in", data=signed, allow_redirects=False) as r:
            assert r.status == 303
        async with client.get(console.url + "claim") as r:
            csrf = _csrf(await r.text())
        statuses = []
        for attempt in range(20):
            form = {"csrf": csrf, "how": "token", "dev_eui": dev_eui, "owner_token": f"{attempt:032X}"}
            async with client.post(console.url + "claim", data=form, allow_redirects=False) as r:
                statuses.append(r.status)
                if r.status == 429:
                    wait, page = int(r.headers["Retry-After"]), await r.text()
                    break
    assert statuses[0] == 403 and statuses[-1] == 429, statuses
    minutes = -(-wait // 60)
    assert 0 < wait and f"Try again in {minutes} minute{'s' if minutes != 1 else ''}." in page
