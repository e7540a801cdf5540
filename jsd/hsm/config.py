"""How the daemon finds its token: module path, token label and a PIN that never shows up in output."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["HsmSettings", "Pin", "load_pin"]

_MASK: Final = "Pin(****)"


class Pin:
    """A PIN that masks itself in repr, str, f-strings and logs; `reveal()` is the one way out.

    Only `jsd.hsm` calls `reveal()`, at login or token initialisation.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a PIN must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The clear PIN, for the PKCS#11 login call only."""
        return self._value

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pin):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(Pin)


def load_pin(env_var: str = "JSD_HSM_PIN", file: str | None = None) -> Pin:
    """Read the PIN from a file (if given) or else from the environment, never from argv.

    Command lines are world-readable through /proc; a file or the environment is not. One trailing newline
    is stripped from a file, so `echo PIN > file` works.
    """
    if file is not None:
        text = Path(file).read_text(encoding="utf-8")
        value = text.removesuffix("\n")
        if not value:
            raise ValueError(f"the PIN file {file} is empty")
        return Pin(value)
    value = os.environ.get(env_var, "")
    if not value:
        raise ValueError(f"no HSM PIN: set {env_var} or give a PIN file")
    return Pin(value)


@dataclass(frozen=True)
class HsmSettings:
    """Selects a token: a real HSM and the embedded SoftHSM2 differ in module, label and PIN.

    `reinitialize_every`: after this many operations (a batch counts each of its keys) a process finalises
    and re-initialises the module between two of them (0: never). SoftHSM2 2.6 frees a destroyed session object only when the module is
    finalised (≈ 1 KB per join, measured in docs/pkcs11.md), so a long-running worker grows without it.
    """

    module: str
    token_label: str
    pin: Pin
    reinitialize_every: int = 0
