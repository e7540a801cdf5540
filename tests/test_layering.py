"""The architecture shows in the imports: each layer imports only what docs/design.md allows, and no cycle."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("jsd", "jsd_cli", "jsd_sim", "jsd_nsadapter", "jsd_chirpstack")
PACKAGE_ROOTS = {"jsd": "jsd", "jsd_cli": "cli/jsd_cli", "jsd_sim": "cli/jsd_sim",
                 "jsd_nsadapter": "plugin/jsd_nsadapter", "jsd_chirpstack": "plugin/jsd_chirpstack"}  # fmt: skip
METRICS = "jsd.metrics"  # Prometheus counters: every layer of the daemon may count

# package (or module) -> the first-party modules it may import besides its own, anywhere (docs/design.md).
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "jsd/lorawan": (),
    "jsd/hsm": ("jsd.lorawan",),
    "jsd/registry": (),
    "jsd/join": ("jsd.lorawan", "jsd.hsm", "jsd.registry", METRICS),
    "jsd/lbi": ("jsd.join", "jsd.lorawan", "jsd.bodies", METRICS),
    "jsd/ownership": ("jsd.lorawan", "jsd.hsm", "jsd.registry", METRICS),
    "jsd/wire": ("jsd.ownership.model",),  # pure models: every transport may import them
    "jsd/events": ("jsd.ownership", "jsd.registry", "jsd.config", "jsd.wire", METRICS),
    "jsd/api": ("jsd.ownership", "jsd.bodies", "jsd.wire"),
    "jsd/ui": ("jsd.ownership", "jsd.registry.console", "jsd.api.render", "jsd.lorawan", "jsd.bodies", "jsd.config",
               "jsd.wire"),
    "jsd/__init__.py": (),
    "jsd/__main__.py": (),  # finds the `jsd` console script by its entry point, never imports the CLI
    "jsd/config.py": (),
    "jsd/bodies.py": (),
    "jsd/logs.py": (),
    "jsd/metrics.py": (),
    "jsd/health.py": ("jsd.hsm", "jsd.registry", METRICS),
    "jsd/app.py": ("jsd",),  # the composition root
    "jsd/serve.py": ("jsd",),
    "cli/jsd_cli": ("jsd", "jsd_sim"),  # jsd inside commands only: test_the_cli_imports_the_daemon_lazily
    "cli/jsd_sim": (),  # an independent implementation: never jsd
    "plugin/jsd_nsadapter": ("jsd.lorawan",),
    "plugin/jsd_chirpstack": ("jsd_nsadapter",),
}
# package -> the third-party distributions it may import (anything else is stdlib or a mistake).
MAY_USE: dict[str, tuple[str, ...]] = {
    "jsd/lorawan": (),
    "jsd/hsm": ("pkcs11",),
    "jsd/registry": ("sqlalchemy", "alembic", "asyncpg", "_typeshed"),
    "jsd/join": (),
    "jsd/lbi": ("aiohttp",),
    "jsd/ownership": ("cryptography",),  # answers.py: an import's parked answer, sealed (AES-GCM)
    "jsd/wire": ("pydantic", "pydantic_core"),
    "jsd/events": ("aiomqtt", "paho", "pydantic"),
    "jsd/api": ("aiohttp", "pydantic"),
    "jsd/ui": ("aiohttp", "multidict", "jinja2", "argon2", "cryptography", "segno", "PIL", "zxingcpp"),
    "cli/jsd_cli": ("click", "aiohttp", "segno", "PIL", "sqlalchemy"),
    "cli/jsd_sim": ("aiohttp", "cryptography", "pytest"),
    "plugin/jsd_nsadapter": ("aiohttp", "aiomqtt"),
    "plugin/jsd_chirpstack": ("grpc", "chirpstack_api", "click", "aiohttp", "cryptography"),
}
ONLY_HSM_IMPORTS = ("pkcs11",)
ONLY_EVENTS_IMPORTS = ("aiomqtt", "paho")


def imports_of(path: Path, *, module_level: bool = False) -> set[str]:
    """Imported names, ``from a import b`` as ``a.b``; with ``module_level``, those that run at import time."""
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in _module_level(tree.body) if module_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import: into if/try blocks, not into functions, classes or ``if TYPE_CHECKING``."""
    for node in body:
        if isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level(block)
        else:
            yield node


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _files(unit: str) -> list[Path]:
    path = ROOT / unit
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


def _own(unit: str) -> str:
    return unit.removeprefix("cli/").removeprefix("plugin/").removesuffix(".py").replace("/", ".")


def test_every_package_has_a_rule() -> None:
    units = {f"jsd/{p.parent.name}" for p in (ROOT / "jsd").glob("*/__init__.py")}
    units |= {str(p.relative_to(ROOT)) for p in (ROOT / "jsd").glob("*.py")}
    units |= {str(p.parent.relative_to(ROOT)) for base in ("cli", "plugin") for p in (ROOT / base).glob("*/__init__.py")}
    assert sorted(units - set(MAY_IMPORT)) == []
    assert sorted(u for u in MAY_IMPORT if not (ROOT / u).exists()) == []


@pytest.mark.parametrize("unit", sorted(MAY_IMPORT))
def test_first_party_imports(unit: str) -> None:
    allowed = (_own(unit), *MAY_IMPORT[unit])
    offending = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _files(unit)
        for name in imports_of(path)
        if name.split(".")[0] in FIRST_PARTY and not any(_matches(name, prefix) for prefix in allowed)
    ]
    assert offending == []


@pytest.mark.parametrize("unit", sorted(MAY_USE))
def test_third_party_imports(unit: str) -> None:
    offending = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _files(unit)
        for name in imports_of(path)
        if (top := name.split(".")[0]) not in FIRST_PARTY
        and top not in sys.stdlib_module_names
        and top not in MAY_USE[unit]
    ]
    assert offending == []


def test_the_cli_imports_the_daemon_lazily() -> None:
    """``jsd --help`` must not load SQLAlchemy, the HSM or aiohttp's server: jsd only inside commands."""
    offending = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _files("cli/jsd_cli")
        for name in imports_of(path, module_level=True)
        if _matches(name, "jsd") and not _matches(name, "jsd.lorawan")
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
    """The daemon's MQTT client lives in jsd.events alone (the NS-adapter bridge has its own)."""
    offending = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "jsd").rglob("*.py")
        if "jsd/events" not in path.as_posix()
        and any(_matches(name, p) for name in imports_of(path) for p in ONLY_EVENTS_IMPORTS)
    ]
    assert offending == []


def _first_party_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for top, base in PACKAGE_ROOTS.items():
        for path in (ROOT / base).rglob("*.py"):
            parts = [top, *path.relative_to(ROOT / base).with_suffix("").parts]
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _import_graph() -> dict[str, set[str]]:
    """Module -> the first-party modules it imports at import time (``from p import m`` is an edge to p.m)."""
    modules = _first_party_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for name in imports_of(path, module_level=True):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle() -> None:
    """No first-party modules import each other, directly or round about, when they are loaded."""
    assert _cycles(_import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
