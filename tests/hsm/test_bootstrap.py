"""`jsd hsm init` for the embedded default: SoftHSM2 config, token and storage KEKs in a fresh process.

SoftHSM2 is configured once per process, so a new token under a new state directory needs a new process.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from jsd.hsm import softhsm_conf_for

BOOTSTRAP = """
import asyncio, os, sys
from pathlib import Path
from jsd.hsm import Hsm, Pin, bootstrap_softhsm

async def main() -> None:
    state = Path(sys.argv[1])
    so_pin, user_pin = Pin(os.environ["TEST_SO_PIN"]), Pin(os.environ["TEST_USER_PIN"])
    settings = await bootstrap_softhsm(state, so_pin, user_pin, label="fresh", groups=("default", "eu"))
    again = await bootstrap_softhsm(state, so_pin, user_pin, label="fresh", groups=("default", "eu"))
    assert again == settings, (again, settings)
    async with await Hsm.open(settings) as hsm:
        created = await hsm.ensure_storage_kek("eu")
        blob = await hsm.import_root_key("eu", bytes(16))
    print(os.environ["SOFTHSM2_CONF"], created, len(blob))

asyncio.run(main())
"""


def test_bootstrap_in_a_fresh_process(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "SOFTHSM2_CONF"}
    env |= {"TEST_SO_PIN": "so-1234-bootstrap", "TEST_USER_PIN": "user-5678-bootstrap"}

    done = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "softhsm2.conf"), "False", "24"]
    assert len([entry for entry in (tmp_path / "tokens").iterdir() if entry.is_dir()]) == 1
    assert "1234" not in done.stderr and "5678" not in done.stderr


def test_softhsm_conf_for(tmp_path: Path) -> None:
    conf = softhsm_conf_for(tmp_path / "state")

    assert conf == (tmp_path / "state" / "softhsm2.conf").resolve()
    assert f"directories.tokendir = {(tmp_path / 'state' / 'tokens').resolve()}\n" in conf.read_text()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state" / "tokens").stat().st_mode) == 0o700
    assert softhsm_conf_for(tmp_path / "state") == conf
