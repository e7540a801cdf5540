"""Small pieces of TOML configuration shared by the bridge and adapters' own services (ChirpStack's application side).

Secrets (API keys, tokens, passwords, ASTKs) are never values in these files, only paths to files that hold
them, so a configuration can be shown, copied into an issue or mounted world-readable.
"""

from __future__ import annotations

import logging
import time
import tomllib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """The configuration cannot be used; the text names the key."""


def load_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file; a syntax error becomes a SettingsError naming the file and the line."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None


def check_keys(table: Mapping[str, Any], where: str, allowed: Collection[str], required: Collection[str] = ()) -> None:
    """Unknown keys are errors (a misspelt key must not silently fall back to a default)."""
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise SettingsError(f"[{where}]: unknown key(s) {', '.join(unknown)}")
    missing = sorted(set(required) - set(table))
    if missing:
        raise SettingsError(f"[{where}]: missing key(s) {', '.join(missing)}")


def read_secret(path: str | Path, what: str) -> str:
    """A secret from a file, stripped; an empty file is an error, not an empty secret."""
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise SettingsError(f"{what}: {path} is empty")
    return value


def secret_files(config: Mapping[str, Any], where: str = "") -> Iterator[tuple[str, Path]]:
    """Every file a configuration reads a secret from: keys ending in ``_file``, and the values of ``[astks]``."""
    for key, value in config.items():
        here = f"{where}.{key}" if where else str(key)
        if isinstance(value, Mapping):
            if key == "astks":
                yield from ((f"{here}.{label}", Path(str(path))) for label, path in value.items())
            else:
                yield from secret_files(value, here)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from secret_files(item, f"{here}[{index}]")
        elif str(key).endswith("_file") and isinstance(value, str):
            yield here, Path(value)


def _empty(path: Path) -> bool:
    try:
        return not path.read_text().strip()
    except OSError:
        return False  # a missing or unreadable file is a configuration mistake: loading it says so at once


def wait_for_secret_files(
    files: Sequence[tuple[str, Path]],
    *,
    interval: float = 1.0,
    remind_every: float = 30.0,
) -> float:
    """Block while any of these files exists but is empty, saying which ones every ``remind_every`` seconds.

    The compose stack creates the secret files empty and the operator fills them after the first start (an API
    key can only be made once the Join Server runs): a service that exited on an empty file would crash-loop
    until then. Returns the seconds waited.
    """
    started = time.monotonic()
    next_note = started
    while True:
        empty = [(where, path) for where, path in files if _empty(path)]
        now = time.monotonic()
        if not empty:
            if now - started >= interval:
                log.info("secret files filled after %.0f s; starting", now - started)
            return now - started
        if now >= next_note:
            log.warning(
                "waiting for secret file(s) to be filled (empty: %s); write the secret into the file on the host"
                " (docker/secrets/…) and this service continues by itself",
                ", ".join(f"{where} = {path}" for where, path in empty),
            )
            next_note = now + remind_every
        time.sleep(interval)


def read_key(path: str | Path, what: str) -> bytes:
    """An AES key as hex in a file (32 hex digits for AES-128)."""
    text = read_secret(path, what)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise SettingsError(f"{what}: {path} does not hold hex") from None
    if len(key) not in (16, 24, 32):
        raise SettingsError(f"{what}: {path} holds {len(key)} bytes, not an AES key")
    return key


@dataclass(frozen=True)
class MqttSettings:
    """A broker: ``server = "mqtt://host:1883"`` (``mqtts://`` for TLS), ``username``, ``password_file``."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str, extra: Collection[str] = ()) -> MqttSettings:
        check_keys(table, where, {"server", "username", "password_file", *extra}, {"server"})
        url = urlsplit(str(table["server"]))
        if url.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not url.hostname:
            raise SettingsError(f"[{where}] server: use mqtt://host:port or mqtts://host:port")
        tls = url.scheme in ("mqtts", "ssl")
        password = read_secret(table["password_file"], f"[{where}] password_file") if "password_file" in table else None
        return cls(url.hostname, url.port or (8883 if tls else 1883), tls, table.get("username"), password)

    def client(self, identifier: str | None = None) -> Any:
        """An ``aiomqtt.Client`` for this broker (imported here: the CLI module must stay light)."""
        import ssl

        import aiomqtt

        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=identifier,
            tls_context=ssl.create_default_context() if self.tls else None,
        )
