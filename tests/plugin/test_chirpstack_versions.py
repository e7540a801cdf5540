"""The ChirpStack release the plugin needs, checked against the proto of that release, not only the installed one.

``chirpstack/api-4.12.0.json`` holds the field names and numbers, enum values and RPCs of ChirpStack's
``api/device.proto``, ``api/device_profile.proto``, ``common/common.proto`` and ``integration/integration.proto``
as released in chirpstack-api 4.12.0 (the PyPI package generated from chirpstack/chirpstack tag v4.12.0), with
the members 4.11.1 lacks; ``scripts/chirpstack_proto_manifest.py`` wrote it from the two sdists. The plugin
declares what it uses (``jsd_chirpstack.apiuse``); the last test reads the plugin's source to hold that
declaration to the code: by name (the source does not say which message a variable holds, so a field
declared for one message covers that name everywhere), RPC names, constructor keywords and enum values exactly.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from chirpstack_api.api import device_pb2, device_profile_pb2
from chirpstack_api.common import common_pb2
from chirpstack_api.integration import integration_pb2
from click.testing import CliRunner
from google.protobuf.descriptor import Descriptor, FileDescriptor

import jsd_chirpstack
from jsd_chirpstack.apiuse import CONFIG_USES, MINIMUM_CHIRPSTACK, PROTO_USES
from jsd_chirpstack.cli import chirpstack
from jsd_chirpstack.nsconfig import JoinServerEntry, render

MANIFEST: dict[str, Any] = json.loads((Path(__file__).parent / "chirpstack" / "api-4.12.0.json").read_text())
PLUGIN = Path(jsd_chirpstack.__file__).parent
# The plugin's own attributes that happen to share a name with some field of these protos (checked by hand:
# exception .code, report .errors, dict .value, asyncio/click .start).
NOT_PROTO = {"code", "errors", "value", "start"}
MODULE_PACKAGE = {"device_pb2": "api", "device_profile_pb2": "api", "common_pb2": "common",
                  "integration_pb2": "integration"}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def members(facts: dict[str, Any], name: str) -> set[str] | None:
    """Fields of a message, values of an enum or RPCs of a service, by full name; None if there is no such thing."""
    if name in facts["messages"]:
        return set(facts["messages"][name])
    if name in facts["enums"]:
        return set(facts["enums"][name])
    if name in facts["services"]:
        return set(facts["services"][name]["rpcs"])
    return None


def installed_facts() -> dict[str, Any]:
    """The same shape as the manifest, from the chirpstack-api installed here."""
    facts: dict[str, Any] = {"messages": {}, "enums": {}, "services": {}}

    def walk(message: Descriptor) -> None:
        facts["messages"][message.full_name] = {f.name: f.number for f in message.fields}
        for enum in message.enum_types:
            facts["enums"][enum.full_name] = {v.name: v.number for v in enum.values}
        for nested in message.nested_types:
            walk(nested)

    files: list[FileDescriptor] = [m.DESCRIPTOR for m in (device_pb2, device_profile_pb2, common_pb2, integration_pb2)]
    for file in files:
        for message in file.message_types_by_name.values():
            walk(message)
        for enum in file.enum_types_by_name.values():
            facts["enums"][enum.full_name] = {v.name: v.number for v in enum.values}
        for service in file.services_by_name.values():
            facts["services"][service.full_name] = {"rpcs": [m.name for m in service.methods]}
    return facts


def test_the_manifest_is_the_minimum_release() -> None:
    assert MANIFEST["chirpstack_api"] == MINIMUM_CHIRPSTACK
    assert "chirpstack/chirpstack tag v4.12.0" in MANIFEST["provenance"]


@pytest.mark.parametrize("name", sorted(PROTO_USES))
def test_every_use_exists_in_the_minimum_release(name: str) -> None:
    found = members(MANIFEST, name)
    assert found is not None, f"{name} is not in ChirpStack {MINIMUM_CHIRPSTACK}"
    assert set(PROTO_USES[name]) <= found, f"{name}: {sorted(set(PROTO_USES[name]) - found)} not in {MINIMUM_CHIRPSTACK}"


def test_the_release_before_the_minimum_lacks_something_the_plugin_uses() -> None:
    """4.11.1 has no ListDevicesRequest.order_by and no DeviceListItem.tags, and no authorization_header."""
    used = {f"{name}.{member}" for name, listed in PROTO_USES.items() for member in listed}
    assert used & set(MANIFEST["absent_in_4.11.1"]) == {
        "api.ListDevicesRequest.order_by",
        "api.ListDevicesRequest.OrderBy.DEV_EUI",
        "api.DeviceListItem.tags",
    }
    newest = max(_version(since) for since, _ in CONFIG_USES.values())
    assert newest == _version(MINIMUM_CHIRPSTACK)
    assert CONFIG_USES["[[join_server.servers]] authorization_header"][0] == MINIMUM_CHIRPSTACK


def test_the_installed_package_has_every_use_with_the_same_numbers() -> None:
    installed = installed_facts()
    for name, listed in PROTO_USES.items():
        found = members(installed, name)
        assert found is not None and set(listed) <= found, name
        for kind in ("messages", "enums"):
            if name in MANIFEST[kind]:
                assert {m: installed[kind][name][m] for m in listed} == {m: MANIFEST[kind][name][m] for m in listed}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _chain(node: ast.expr) -> list[str]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.insert(0, node.id)
    return parts


def undeclared_uses() -> list[str]:
    """What the plugin's source touches of the ChirpStack protos without `PROTO_USES` listing it."""
    declared_fields = {f for name, listed in PROTO_USES.items() if name in MANIFEST["messages"] for f in listed}
    installed = installed_facts()
    every_field = {f for fields in installed["messages"].values() for f in fields}
    json_names = {_camel(f): f for f in every_field if _camel(f) != f}
    rpcs = {rpc for name, listed in PROTO_USES.items() if name in MANIFEST["services"] for rpc in listed}
    problems: list[str] = []
    for path in sorted(PLUGIN.glob("*.py")):
        if path.name == "apiuse.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute):
                chain = _chain(node)
                if chain and chain[0] in MODULE_PACKAGE and len(chain) >= 3 and chain[-1].isupper():
                    enum = ".".join([MODULE_PACKAGE[chain[0]], *chain[1:-1]])
                    if chain[-1] not in PROTO_USES.get(enum, ()):
                        problems.append(f"{where}: {enum}.{chain[-1]}")
                elif node.attr in every_field - NOT_PROTO - declared_fields and chain[:1] != ["self"]:
                    problems.append(f"{where}: field {node.attr}")
            elif isinstance(node, ast.Call):
                chain = _chain(node.func)
                if len(chain) >= 2 and chain[0] in MODULE_PACKAGE:
                    message = ".".join([MODULE_PACKAGE[chain[0]], *chain[1:]])
                    for keyword in node.keywords:
                        if keyword.arg not in PROTO_USES.get(message, ()):
                            problems.append(f"{where}: {message}.{keyword.arg}")
                if chain[-1:] == ["call"] and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                    if node.args[1].value not in rpcs:
                        problems.append(f"{where}: RPC {node.args[1].value}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in json_names:
                if json_names[node.value] not in declared_fields:
                    problems.append(f"{where}: event field {node.value}")
    return problems


def test_the_plugin_touches_nothing_it_does_not_declare() -> None:
    assert undeclared_uses() == []


def test_help_and_config_state_the_minimum() -> None:
    minor = ".".join(MINIMUM_CHIRPSTACK.split(".")[:2])
    runner = CliRunner()
    group = runner.invoke(chirpstack, ["--help"])
    assert group.exit_code == 0 and f"v{minor}" in group.output, group.output
    assert not re.search(r"4\.6\b", group.output)
    text = render(JoinServerEntry(join_eui_prefix="70b3d57ed0000000/56", server="http://js:8090/api/lbi",
                                  kek_label="ns-1", kek=bytes(16), token="t" * 20))
    assert f"v{minor}+" in text and not re.search(r"v4\.6\b", text)
