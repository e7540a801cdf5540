"""`jsd hsm import-lmk`: a lot master key imported on the daemon's machine makes secure-element imports work."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from jsd.app import OWNERSHIP
from jsd.ownership import SCOPES, AccountKind, InvalidRequest, Principal
from jsd.ownership.se import AesEcbDerivation, TkmInfo

OPERATOR = Principal("_local", AccountKind.OPERATOR, frozenset(SCOPES), None, "test")


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_import_lmk_then_secure_element_devices_derive_their_keys(
    jsd_server: Any, local_env: dict[str, str]
) -> None:
    manuf, prod, lmk_id = 0xA, secrets.randbelow(16), secrets.randbelow(16)
    tkm = TkmInfo(manuf, prod, lmk_id, 1, secrets.token_bytes(8))
    service = jsd_server.app[OWNERSHIP]
    device = {"dev_eui": secrets.token_hex(8), "join_eui": "70b3d57ed0000000", "mac_version": "1.0.3",
              "secure_element": True, "tkm_info": tkm.to_bytes().hex()}  # fmt: skip
    with pytest.raises(InvalidRequest, match="lot master key"):
        await service.devices.add_device(OPERATOR, device)

    master = secrets.token_bytes(16)
    command = [sys.executable, "-m", "jsd", "hsm", "import-lmk", "--se-manuf-id", str(manuf),
               "--se-prod-id", str(prod), "--lmk-id", str(lmk_id), "--key-file", "-"]  # fmt: skip
    env = local_env
    run = subprocess.run
    done = await asyncio.to_thread(run, command, input=master.hex(), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert master.hex() not in done.stdout + done.stderr
    again = await asyncio.to_thread(run, command, input=master.hex(), env=env, capture_output=True, text=True)
    assert again.returncode != 0 and "KekExists" in again.stderr

    added = await service.devices.add_device(OPERATOR, device)
    assert added.owner_token == tkm.to_bytes().hex().upper()
    stored = await jsd_server.registry.get_device(bytes.fromhex(device["dev_eui"]))
    block = AesEcbDerivation().blocks(tkm, False)["app_key"]
    app_key = Cipher(algorithms.AES(master), modes.ECB()).encryptor().update(block)
    message = secrets.token_bytes(19)
    mac = CMAC(algorithms.AES(app_key))
    mac.update(message)
    await jsd_server.hsm.check_mic("default", stored.app_key_blob, message, mac.finalize()[:4])


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("key", "ids", "message"),
    [
        ("zz" * 16, ("1", "2", "3"), "not hex"),
        ("00" * 15, ("1", "2", "3"), "must be 16 bytes"),
        ("00" * 16, ("16", "2", "3"), "not in the range"),
    ],
)
async def test_import_lmk_refuses_bad_input(local_env: dict[str, str], key: str, ids: tuple[str, ...], message: str) -> None:
    command = [sys.executable, "-m", "jsd", "hsm", "import-lmk", "--se-manuf-id", ids[0], "--se-prod-id", ids[1],
               "--lmk-id", ids[2], "--key-file", "-"]  # fmt: skip
    run = subprocess.run
    done = await asyncio.to_thread(run, command, input=key, env=local_env, capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert key not in done.stderr
