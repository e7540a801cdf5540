"""Write the proto facts of one chirpstack-api release as JSON, for tests/plugin/test_chirpstack_versions.py.

Usage: pip download --no-deps --no-binary :all: chirpstack-api==4.12.0 -d DIR; unpack it; then
    python scripts/chirpstack_proto_manifest.py DIR/chirpstack_api-4.12.0 [DIR/chirpstack_api-4.11.1] > FILE.json

Reads the serialized FileDescriptorProtos embedded in the generated ``*_pb2.py`` modules (no import, so any
release can be read whatever protobuf runtime is installed) and records, per message, enum and service of the
files the plugin uses, the field names and numbers, enum values and RPC names. With a second (older) release,
also records what the first has that the second lacks.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

FILES = ("api/device_pb2.py", "api/device_profile_pb2.py", "common/common_pb2.py", "integration/integration_pb2.py")


def descriptors(root: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    found = []
    for rel in FILES:
        path = next(root.rglob(f"chirpstack_api/{rel}"))
        match = re.search(r"AddSerializedFile\((b'.*?')\)", path.read_text(), re.S)
        if match is None:
            raise SystemExit(f"{path}: no serialized descriptor")
        found.append(descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(match.group(1))))
    return found


def facts(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, dict[str, dict[str, int | list[str]]]]:
    messages: dict[str, dict[str, int | list[str]]] = {}
    enums: dict[str, dict[str, int | list[str]]] = {}
    services: dict[str, dict[str, int | list[str]]] = {}

    def walk(items: list[descriptor_pb2.DescriptorProto], prefix: str) -> None:
        for message in items:
            name = prefix + message.name
            messages[name] = {field.name: field.number for field in message.field}
            for enum in message.enum_type:
                enums[f"{name}.{enum.name}"] = {value.name: value.number for value in enum.value}
            walk(list(message.nested_type), name + ".")

    for fd in files:
        walk(list(fd.message_type), fd.package + ".")
        for enum in fd.enum_type:
            enums[f"{fd.package}.{enum.name}"] = {value.name: value.number for value in enum.value}
        for service in fd.service:
            services[f"{fd.package}.{service.name}"] = {"rpcs": sorted(method.name for method in service.method)}
    return {"messages": messages, "enums": enums, "services": services}


def missing(new: dict[str, dict[str, dict[str, object]]], old: dict[str, dict[str, dict[str, object]]]) -> list[str]:
    gone = []
    for kind in ("messages", "enums"):
        for name, members in new[kind].items():
            gone += [f"{name}.{m}" for m in members if m not in old[kind].get(name, {})]
    for name, service in new["services"].items():
        old_rpcs = old["services"].get(name, {}).get("rpcs", [])
        gone += [f"{name}.{rpc}" for rpc in service["rpcs"] if rpc not in old_rpcs]  # type: ignore[union-attr]
    return sorted(gone)


def main(argv: list[str]) -> None:
    root = Path(argv[1])
    version = root.name.rpartition("-")[2]
    out: dict[str, object] = {
        "chirpstack_api": version,
        "provenance": f"PyPI chirpstack-api=={version} (sdist), serialized descriptors of "
        + ", ".join(f"chirpstack_api/{f}" for f in FILES)
        + f"; generated from chirpstack/chirpstack tag v{version}, api/proto/",
        **facts(descriptors(root)),
    }
    if len(argv) > 2:
        older = Path(argv[2])
        out[f"absent_in_{older.name.rpartition('-')[2]}"] = missing(out, facts(descriptors(older)))  # type: ignore[arg-type]
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv)
