"""jsd.lorawan stays pure: standard library only, and none of it for logging or I/O."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import jsd.lorawan

PACKAGE_DIR = Path(jsd.lorawan.__file__).resolve().parent
FORBIDDEN = {"logging", "io", "os", "socket", "pathlib", "asyncio", "subprocess", "ssl", "hashlib", "hmac"}


def _imported_modules(source: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{source.name}: use absolute imports (jsd.lorawan.…)")
            modules.add(node.module or "")
    return modules


@pytest.mark.parametrize("source", sorted(PACKAGE_DIR.glob("*.py")), ids=lambda p: f"lorawan/{p.name}")
def test_imports_are_stdlib_only(source: Path) -> None:
    for module in _imported_modules(source):
        top = module.split(".")[0]
        if top == "jsd":
            assert module.startswith("jsd.lorawan"), f"{source.name} imports {module}"
        else:
            assert top in sys.stdlib_module_names, f"{source.name} imports non-stdlib {module}"
            assert top not in FORBIDDEN, f"{source.name} imports {module}"
