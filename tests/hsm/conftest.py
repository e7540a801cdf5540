"""HSM test helpers on top of the shared SoftHSM2 token of tests/conftest.py (`hsm_settings`, `hsm`).

SoftHSM2 reads SOFTHSM2_CONF once per process, so every test in a pytest run shares that one token; a
fresh token from `bootstrap_softhsm` is tested in a subprocess (test_bootstrap.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pkcs11
import pytest
from pkcs11.types import Session

from jsd.hsm import Hsm, HsmSettings, _thread

InToken = Callable[[Callable[[Session], Any]], Awaitable[Any]]


@pytest.fixture
async def groups(hsm: Hsm) -> tuple[str, str]:
    """Two HSM groups with storage KEKs: blobs of one must not unwrap in the other."""
    for group in ("default", "other"):
        await hsm.ensure_storage_kek(group)
    return ("default", "other")


@pytest.fixture
def in_token(hsm_settings: HsmSettings, hsm: Hsm) -> InToken:
    """Run `fn(session)` with a raw python-pkcs11 session in the jsd-hsm thread, logged in through `hsm`.

    Tests play the PIN holder with it. It must never run on another thread: SoftHSM2 runs without locks.
    """

    async def call(fn: Callable[[Session], Any]) -> Any:
        def job() -> Any:
            token = pkcs11.lib(hsm_settings.module).get_token(token_label=hsm_settings.token_label)
            with token.open(rw=True) as session:
                return fn(session)

        return await _thread.call(job)

    return call
