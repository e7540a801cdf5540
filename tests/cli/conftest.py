"""The environment of a ``python -m jsd`` run in local mode on the test daemon's database and HSM token."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from jsd.app import softhsm_module

from ..conftest import TOKEN_LABEL


@pytest.fixture
def local_env(jsd_server: Any, hsm_state: Path, tmp_path: Path) -> dict[str, str]:
    """What an operator on the daemon's machine has: its database URL, the token and the PIN file; no API key."""
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
