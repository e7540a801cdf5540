"""The embedded default HSM: a SoftHSM2 token kept under the daemon's state directory.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, when the module is initialised, so the environment variable must be
set before the first `Hsm.open` or `init_softhsm_token` in the process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from jsd.hsm import _thread, _token, cryptoki
from jsd.hsm.config import HsmSettings, Pin
from jsd.hsm.errors import HsmError
from jsd.hsm.service import Hsm

__all__ = [
    "SOFTHSM_MODULES",
    "bootstrap_softhsm",
    "find_softhsm_module",
    "init_softhsm_token",
    "softhsm_conf_for",
]

SOFTHSM_MODULES: Final = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)
_CONF_ENV: Final = "SOFTHSM2_CONF"


def find_softhsm_module(candidates: Iterable[str] = SOFTHSM_MODULES) -> str:
    """The first SoftHSM2 module found at a usual install path."""
    for path in candidates:
        if Path(path).is_file():
            return path
    raise HsmError("SoftHSM2 not found; install softhsm2 or give the module path")


def softhsm_conf_for(state_dir: Path) -> Path:
    """Write ``<state_dir>/softhsm2.conf`` pointing SoftHSM2 at ``<state_dir>/tokens``; return its path.

    Tokens hold wrapped keys and PIN-derived secrets, so the directory is private to the daemon's user.
    ``library.reset_on_fork`` makes a forked child start with a clean module instead of sharing the
    parent's sessions.
    """
    state_dir = Path(state_dir).resolve()
    tokens = state_dir / "tokens"
    tokens.mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = state_dir / "softhsm2.conf"
    text = (
        "# Written by jsd: the embedded SoftHSM2 token of this state directory.\n"
        f"directories.tokendir = {tokens}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
        "slots.mechanisms = ALL\n"
        "library.reset_on_fork = true\n"
    )
    if not conf.is_file() or conf.read_text(encoding="utf-8") != text:
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    return conf


def init_softhsm_token(module: str, label: str, so_pin: Pin, user_pin: Pin) -> None:
    """Create and initialise the token (C_InitToken + C_InitPIN, no PIN on any command line).

    Idempotent: a token with this label is left alone (its user PIN is set if an earlier run stopped
    half-way). Blocking; runs in the jsd-hsm thread like every PKCS#11 call.
    """
    if "softhsm" in Path(module).name and _CONF_ENV not in os.environ:
        raise HsmError(f"set {_CONF_ENV} (see softhsm_conf_for) before initialising a SoftHSM2 token")
    _thread.call_blocking(_token.init_token, module, label, so_pin, user_pin)


async def bootstrap_softhsm(
    state_dir: Path,
    so_pin: Pin,
    user_pin: Pin,
    *,
    label: str = "jsd",
    groups: Iterable[str] = ("default",),
    module: str | None = None,
) -> HsmSettings:
    """`jsd hsm init` for the embedded default: config, token, and a storage KEK per group.

    Sets ``SOFTHSM2_CONF`` for this process; refuses if the module was already loaded with another config.
    """
    module = module or find_softhsm_module()
    conf = str(softhsm_conf_for(state_dir))
    current = os.environ.get(_CONF_ENV)
    if current != conf and cryptoki.loaded(module):
        raise HsmError(f"{module} is already loaded with {_CONF_ENV}={current}; run the bootstrap in a fresh process")
    os.environ[_CONF_ENV] = conf
    await _thread.call(_token.init_token, module, label, so_pin, user_pin)
    settings = HsmSettings(module=module, token_label=label, pin=user_pin)
    async with await Hsm.open(settings) as hsm:
        for group in groups:
            await hsm.ensure_storage_kek(group)
    return settings
