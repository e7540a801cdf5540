"""The web console in a real browser: Playwright for Python driving Debian's chromium, headless.

The daemon is the real application on 127.0.0.1 (SQLite unless a test asks otherwise); accounts and users
are made the way an operator does on the daemon's machine (the services called as the local operator).
A missing browser fails the test with the command that installs it, never skips it.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jsd.app import OWNERSHIP
from jsd.ownership import SCOPES, AccountKind, Principal
from jsd.ui.site import CONSOLE

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL = Principal("_local", AccountKind.OPERATOR, frozenset(SCOPES), None, "local test")
PASSWORD = "correct horse battery"


@dataclass
class Console:
    """The running daemon's console and shortcuts to make accounts, users and devices as the operator."""

    server: Any

    @property
    def url(self) -> str:
        return self.server.url + "ui/"

    @property
    def service(self) -> Any:
        return self.server.app[OWNERSHIP]

    async def account(self, account_id: str, kind: str) -> str:
        _, key = await self.service.accounts.create_account(LOCAL, account_id, kind, None)
        return str(key.key)

    async def user(self, account_id: str, username: str, password: str = PASSWORD) -> None:
        await self.server.app[CONSOLE].auth.create_user(LOCAL, account_id, username, password)

    async def maker_device(self, maker: str, **fields: Any) -> tuple[str, Any]:
        """A device pre-commissioned by `maker`; its DevEUI and the ImportedDevice (owner token)."""
        p = Principal(maker, AccountKind.MANUFACTURER, frozenset({"devices:read", "devices:write"}), None, "test")
        dev_eui = fields.pop("dev_eui", secrets.token_hex(8))
        base = {"dev_eui": dev_eui, "join_eui": "70b3d57ed0000001", "mac_version": "1.0.3",
                "app_key": secrets.token_hex(16)}  # fmt: skip
        imported = await self.service.devices.add_device(p, base | fields)
        return dev_eui, imported


@pytest.fixture
async def console(jsd_server: Any) -> Console:
    return Console(jsd_server)


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(
            f"{CHROMIUM} is missing: install it with `sudo apt-get install -y chromium` (./scripts/test.sh does it as root)"
        )


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    """Headless chromium with a fresh profile (the machine has no network: nothing may be fetched)."""
    _need_chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: pip install -e '.[test]'")
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1280, "height": 860},
        )
        try:
            yield context
        finally:
            await context.close()


async def sign_in(page: Any, console: Console, username: str, password: str = PASSWORD) -> None:
    await page.goto(console.url)
    await page.get_by_label("User name").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/ui/devices**")
