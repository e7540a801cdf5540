"""The ``jsd chirpstack`` commands as an operator runs them: a separate process, a config file, real services."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jsd.app import OWNERSHIP
from jsd.ownership import SCOPES, AccountKind, Principal
from jsd_nsadapter.contract import LINK_TAG


def test_the_command_group_is_registered_and_light(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "jsd", "chirpstack", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("config", "run", "appserver"):
        assert command in result.stdout
    probe = "import sys, jsd_cli; print(sorted(m for m in ('grpc', 'chirpstack_api', 'aiomqtt') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "[]", "loading jsd (and its plugins) must not import grpc or chirpstack_api"


def test_a_bad_bridge_config_is_an_error_message(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('[[links]]\nname = "a"\njsd_url = "http://x/"\napi_key_file = "/nonexistent"\n'
                      '[links.chirpstack]\nserver = "x:1"\n')
    result = subprocess.run([sys.executable, "-m", "jsd", "chirpstack", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "api_key_file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_run_once_creates_a_claimed_device(
    jsd_server: Any, chirpstack: Any, chirpstack_token_file: Path, tmp_path: Path
) -> None:
    service = jsd_server.app[OWNERSHIP]
    local = Principal(account="_local", kind=AccountKind.OPERATOR, scopes=frozenset(SCOPES), key_id=None,
                      source="test")
    _, maker = await service.accounts.create_account(local, "maker", "manufacturer", None)
    _, acme = await service.accounts.create_account(local, "acme", "subscriber", None)
    dev_eui = secrets.token_hex(8)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{jsd_server.url}api/v1/devices", headers={"Authorization": f"Bearer {maker.key}"},
                             json={"dev_eui": dev_eui, "join_eui": "70b3d57ed0000001", "mac_version": "1.0.3",
                                   "app_key": secrets.token_hex(16)}) as response:
            token = (await response.json())["owner_token"]
        async with http.post(f"{jsd_server.url}api/v1/claims", headers={"Authorization": f"Bearer {acme.key}"},
                             json={"dev_eui": dev_eui, "owner_token": token}) as response:
            assert response.status == 200
    key_file = tmp_path / "acme.key"
    key_file.write_text(acme.key)
    config = tmp_path / "bridge.toml"
    config.write_text(f"""
[[links]]
name = "acme"
jsd_url = "{jsd_server.url}"
api_key_file = "{key_file}"

[links.chirpstack]
server = "{chirpstack.target}"
api_token_file = "{chirpstack_token_file}"
application_id = "{chirpstack.application_id}"
device_profile_id = "{chirpstack.device_profile_id}"
""")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jsd", "chirpstack", "run", "--once", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    device = chirpstack.device(dev_eui)
    assert device is not None and dict(device.tags) == {LINK_TAG: "acme"}
    assert acme.key not in stderr.decode() and chirpstack.state.token not in stderr.decode()
