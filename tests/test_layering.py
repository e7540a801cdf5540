"""The architecture shows in the imports: each layer imports only what docs/design.md allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> prefixes of first-party/third-party modules it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "jsd/lorawan": ("jsd.hsm", "jsd.registry", "jsd.join", "jsd.lbi", "jsd.app", "pkcs11", "sqlalchemy", "aiohttp", "cryptography"),
    "jsd/registry": ("jsd.hsm", "jsd.join", "jsd.lbi", "jsd.app", "pkcs11", "aiohttp", "cryptography"),
    "jsd/join": ("jsd.lbi", "jsd.app", "pkcs11", "sqlalchemy", "aiohttp"),
    "jsd/lbi": ("jsd.hsm", "jsd.registry", "jsd.app", "pkcs11", "sqlalchemy"),
    "jsd/events": ("jsd.hsm", "jsd.join", "jsd.lbi", "jsd.api", "jsd.app", "pkcs11", "sqlalchemy", "aiohttp"),
    "jsd/api": ("jsd.hsm", "jsd.registry", "jsd.lbi", "jsd.app", "pkcs11", "sqlalchemy", "cryptography"),
    "jsd/ui": ("jsd.hsm", "jsd.join", "jsd.lbi", "jsd.app", "pkcs11", "sqlalchemy"),
    "jsd/wire": ("jsd.hsm", "jsd.registry", "jsd.join", "jsd.lbi", "jsd.api", "jsd.events", "jsd.ui", "jsd.app",
                 "pkcs11", "sqlalchemy", "aiohttp", "aiomqtt", "cryptography"),
    "cli/jsd_sim": ("jsd",),
}
ONLY_HSM_IMPORTS = ("pkcs11",)
ONLY_EVENTS_IMPORTS = ("aiomqtt", "paho")


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, package
    offending = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in imports_of(path)
        if any(_matches(name, prefix) for prefix in FORBIDDEN[package])
    ]
    assert offending == []


def test_only_jsd_hsm_imports_pkcs11() -> None:
    offending = [
        str(path.relative_to(ROOT))
        for base in ("jsd", "cli", "plugin")
        for path in (ROOT / base).rglob("*.py")
        if "jsd/hsm" not in path.as_posix()
        and any(_matches(name, p) for name in imports_of(path) for p in ONLY_HSM_IMPORTS)
    ]
    assert offending == []


def test_only_jsd_events_speaks_mqtt_in_the_daemon() -> None:
    """The daemon's MQTT client lives in jsd.events alone (the ChirpStack plugin has its own)."""
    offending = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "jsd").rglob("*.py")
        if "jsd/events" not in path.as_posix()
        and any(_matches(name, p) for name in imports_of(path) for p in ONLY_EVENTS_IMPORTS)
    ]
    assert offending == []
