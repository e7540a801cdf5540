"""The console's main pages at desktop and phone width: no sideways scrolling, every field labelled, a skip
link first in the tab order. Screenshots go to $JSD_CONSOLE_SCREENSHOTS when set (docs/console/ is made so),
else to the test's temporary directory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jsd.ownership import DEFAULT_SCOPES, AccountKind, Principal

from .conftest import sign_in

pytestmark = pytest.mark.parametrize("database", ["sqlite"], indirect=True)

SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
    .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
    .map(e => e.name)"""
HOME = "000013"


async def _check(page: Any, url: str, name: str, out: Path, full: bool = False) -> None:
    for size, viewport in SIZES.items():
        await page.set_viewport_size(viewport)
        response = await page.goto(url)
        assert response is not None and response.status == 200, url
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        wide = await page.evaluate(
            "w => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w && !e.closest('.table-wrap'))"
            ".map(e => e.tagName + '.' + e.className).slice(0, 5)",
            viewport["width"],
        )
        assert width <= viewport["width"], f"{name} scrolls sideways at {size} width ({width}px): {wide}"
        assert await page.evaluate(UNLABELLED) == [], f"{name}: fields without a label"
        await page.screenshot(path=str(out / f"{name}-{size}.png"), full_page=full)
        await page.keyboard.press("Tab")
        assert await page.evaluate("() => document.activeElement.className") == "skip", name


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("JSD_CONSOLE_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


async def test_main_pages_fit_a_phone_and_are_labelled(console: Any, browser: Any, shots: Path) -> None:
    out = shots
    token = secrets.token_urlsafe(16)
    await console.server.add_network_server(HOME, secrets.token_bytes(16), token)
    await console.account("acme", "manufacturer")
    await console.account("greenfield", "subscriber")
    await console.account("ops", "operator")
    await console.user("greenfield", "alice")
    await console.user("ops", "operator")
    owner = Principal("greenfield", AccountKind.SUBSCRIBER, DEFAULT_SCOPES[AccountKind.SUBSCRIBER], None, "test")
    first = ""
    for i, name in enumerate(["soil-probe-north", "soil-probe-south", "water-meter-7", "gate-sensor", "cold-room"]):
        app_key = secrets.token_bytes(16)
        dev_eui, made = await console.maker_device("acme", name=name, app_key=app_key.hex())
        await console.service.claims.claim(owner, bytes.fromhex(dev_eui), made.owner_token)
        if i < 3:
            await console.service.devices.set_net_id(owner, bytes.fromhex(dev_eui), bytes.fromhex(HOME))
        if i == 0:
            first = dev_eui
            from jsd_sim import SimDevice

            from .test_console import send_join

            sim = SimDevice(bytes.fromhex(dev_eui), bytes.fromhex("70b3d57ed0000001"), "1.0.3", app_key, None)
            for _ in range(2):
                await send_join(console.server, sim, HOME, token)
    page = await browser.new_page()
    await page.set_viewport_size(SIZES["phone"])
    await page.goto(console.url + "sign-in")
    await _check(page, console.url + "sign-in", "sign-in", out)
    await sign_in(page, console, "alice")
    await _check(page, console.url + "devices", "devices", out)
    await _check(page, console.url + f"devices/{first}", "device", out, full=True)
    await _check(page, console.url + "claim", "claim", out)
    await page.context.clear_cookies()
    await sign_in(page, console, "operator")
    await _check(page, console.url + "admin/network-servers", "network-servers", out)
    await _check(page, console.url + "admin/accounts", "accounts", out)
    await _check(page, console.url + "uploads/new", "upload", out)


async def test_security_headers_and_root_redirect(console: Any) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(console.server.url, allow_redirects=False) as root:
            assert root.status == 302 and root.headers["Location"] == "/ui/"
        async with client.get(console.url + "sign-in") as page:
            assert page.status == 200
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
            assert page.headers["Cache-Control"] == "no-store"
            assert page.headers["X-Frame-Options"] == "DENY"
        async with client.get(console.url + "devices", allow_redirects=False) as private:
            assert private.status == 303 and private.headers["Location"] == "/ui/sign-in"
        # the REST API stays API-key based and untouched by the console
        async with client.get(console.server.url + "api/v1/devices") as api:
            assert api.status == 401 and api.content_type == "application/problem+json"
