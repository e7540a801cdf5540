"""Branding from the configuration: product name, logo and accent colour; bad values stop the start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jsd.config import ConfigError
from jsd.ui import brand

from ..daemons import daemon_settings, start_app, stop_app

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


@pytest.fixture
async def branded(hsm_state: Path, database: Any, tmp_path: Path) -> AsyncIterator[str]:
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    settings = daemon_settings(hsm_state, database.url, tmp_path / "state").replace(
        console__product_name="Acme Devices", console__accent_color="#7a1fa2", console__logo_file=str(logo)
    )
    _, runner, url = await start_app(settings, events=False)
    try:
        yield url + "ui/"
    finally:
        await stop_app(runner)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_product_name_logo_and_colour(branded: str) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(branded + "sign-in") as page:
            html = await page.text()
        assert "<title>Sign in · Acme Devices</title>" in html and 'src="/ui/branding/logo"' in html
        async with client.get(branded + "branding.css") as css:
            assert "--accent: #7a1fa2" in await css.text()
        async with client.get(branded + "branding/logo") as logo:
            assert logo.status == 200 and await logo.read() == PNG


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_bad_branding_is_a_configuration_error(hsm_state: Path, database: Any, tmp_path: Path) -> None:
    settings = daemon_settings(hsm_state, database.url, tmp_path / "state")
    with pytest.raises(ConfigError, match="accent_color"):
        brand(settings.replace(console__accent_color="blue"))
    with pytest.raises(ConfigError, match="logo_file"):
        brand(settings.replace(console__logo_file=str(tmp_path / "missing.png")))
