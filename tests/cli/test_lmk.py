"""`jsd hsm import-lmk`: a lot master key imported on the daemon's machine makes secure-element imports work."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from jsd.app import OWNERSHIP, softhsm_module
from jsd.ownership import SCOPES, AccountKind, InvalidRequest, Principal
from jsd.ownership.se import AesEcbDerivation, TkmInfo

from ..conftest import TOKEN_LABEL

OPERATOR = Principal("_local", AccountKind.OPERATOR, frozenset(SCOPES), None, "test")


def _local_env(jsd_server: Any, hsm_state: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JSD_")}
    env.update(
        {
            "JSD_GENERAL_STATE_DIR": str(tmp_path / "local-state"),
            "JSD_DATABASE_URL": jsd_server.database.url,
            "JSD_HSM_MODULE": softhsm_module(),
            "JSD_HSM_TOKEN_LABEL": TOKEN_LABEL,
            "JSD_HSM_PIN_FILE": str(hsm_state / "hsm-pin"),
            "JSD_HSM_SOFTHSM_CONF": os.environ["SOFTHSM2_CONF"],
            "JSD_LOG_LEVEL": "warning",
        }
    )
    return env


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_import_lmk_then_secure_element_devices_derive_their_keys(
    jsd_server: Any, hsm_state: Path, tmp_path: Path
) -> None:
    manuf, prod, lmk_id = 0xA, secrets.randbelow(16), secrets.randbelow(16)
    tkm = TkmInfo(manuf, prod, lmk_id, 1, secrets.token_bytes(8))
    service = jsd_server.app[OWNERSHIP]
    device = {"dev_eui": secrets.token_hex(8), "join_eui": "70b3d57ed0000000", "mac_version": "1.0.3",
              "secure_element": True, "tkm_info": tkm.to_bytes().hex()}  # fmt: skip
    with pytest.raises(InvalidRequest, match="lot master key"):
        await service.add_device(OPERATOR, device)

    master = secrets.token_bytes(16)
    command = [sys.executable, "-m", "jsd", "hsm", "import-lmk", "--se-manuf-id", str(manuf),
               "--se-prod-id", str(prod), "--lmk-id", str(lmk_id), "--key-file", "-"]  # fmt: skip
    env = _local_env(jsd_server, hsm_state, tmp_path)
    run = subprocess.run
    done = await asyncio.to_thread(run, command, input=master.hex(), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert master.hex() not in done.stdout + done.stderr
    again = await asyncio.to_thread(run, command, input=master.hex(), env=env, capture_output=True, text=True)
    assert again.returncode != 0 and "KekExists" in again.stderr

    added = await service.add_device(OPERATOR, device)
    assert added.owner_token == tkm.to_bytes().hex().upper()
    stored = await jsd_server.registry.get_device(bytes.fromhex(device["dev_eui"]))
    block = AesEcbDerivation().blocks(tkm, False)["app_key"]
    app_key = Cipher(algorithms.AES(master), modes.ECB()).encryptor().update(block)
    message = secrets.token_bytes(19)
    mac = CMAC(algorithms.AES(app_key))
    mac.update(message)
    await jsd_server.hsm.check_mic("default", stored.app_key_blob, message, mac.finalize()[:4])
