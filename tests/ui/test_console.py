"""The console end to end in chromium: sign-in, claims (token, pasted QR, photo), NetID/ASTK, live joins,
release and re-claim, maker uploads, isolation, cross-site forms and the sign-in rate limit."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import sign_in

pytestmark = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


async def test_sign_in_and_claim_by_token(console: Any, browser: Any) -> None:
    await console.account("acme", "manufacturer")
    await console.account("alice-co", "subscriber")
    await console.user("alice-co", "alice")
    dev_eui, imported = await console.maker_device("acme", name="meter-1")
    page = await browser.new_page()
    await sign_in(page, console, "alice")
    await page.get_by_role("link", name="Claim a device").click()
    await page.get_by_role("textbox", name="DevEUI", exact=True).fill(dev_eui.upper())
    await page.get_by_role("textbox", name="Owner token", exact=True).fill(imported.owner_token)
    await page.locator("form:has(input[value=token])").get_by_role("button", name="Claim").click()
    await page.wait_for_url(f"**/ui/devices/{dev_eui}")
    assert "is yours now" in await page.locator(".flash").inner_text()
    await page.screenshot(path="/tmp/console_shot_device.png", full_page=True)
