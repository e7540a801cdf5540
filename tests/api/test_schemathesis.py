"""schemathesis against the running daemon: generated requests for every operation of /api/v1/openapi.json.

It runs as the schemathesis command in a subprocess, so the daemon keeps serving on this test's event loop.
The daemon is first given something to show (accounts, devices in both states, an NS, an ASTK, a roaming
agreement), so the answers checked against the response schemas are not all empty lists. Every check runs
(`--checks all`) on positive and negative data (`--mode all`) and in the stateful phase, which follows the
document's links from what an operation creates to the operations that use it: no 5xx, status code,
content type, headers and body conform, requests the document forbids are refused and those it allows are
accepted, except where only the daemon's state can decide (`STATE_DEPENDENT`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest

JOIN_EUI = "70b3d57ed0000001"
# schemathesis' default answers to schema-valid data, and the operations whose refusals depend on state.
ACCEPTED = ("2xx", "3xx", "401", "403", "404", "409", "429")
STATE_DEPENDENT: dict[str, tuple[str, ...]] = {
    # A malformed CSV file. schemathesis sends text/csv through its text/plain serializer, so it draws any string
    # the body's schema allows. No pattern can say which files are well formed: a row's cells are read by the
    # header's columns, any subset in any order, so a regular expression has to remember the header, one
    # branch per possible header (about 1.4e10). What the daemon's state refuses of a well-formed file is 409.
    "POST /devices/import": ("422",),
}


async def populate(api: Any, eui: Any) -> dict[str, list[str]]:
    """Resources in every state; returns their identifiers by path parameter, for schemathesis to use."""
    acme = await api.account("acme", "manufacturer")
    alice = await api.account("alice", "subscriber")
    await api.network_server("000013")
    await api.ok("POST", "/roaming-agreements", api.operator, {"home_net_id": "000013", "visited_net_id": "00002a"})
    devices = []
    for version in ("1.0.3", "1.1"):
        made = await api.ok("POST", "/devices", acme, {"dev_eui": eui(), "join_eui": JOIN_EUI, "mac_version": version,
                                                       "generate_keys": True, "name": "probe"})  # fmt: skip
        claimed = await api.ok(
            "POST", "/claims", alice, {"dev_eui": made["dev_eui"], "owner_token": made["owner_token"]}
        )
        await api.ok("PUT", f"/devices/{claimed['dev_eui']}/net-id", alice, {"net_id": "000013"})
        devices.append(made["dev_eui"])
    unclaimed = await api.ok("POST", "/devices", acme, {"dev_eui": eui(), "join_eui": JOIN_EUI, "mac_version": "1.0.2",
                                                        "app_key": secrets.token_hex(16)})  # fmt: skip
    devices.append(unclaimed["dev_eui"])
    await api.ok("POST", "/astks", api.operator, {"name": "as-op"})
    await api.ok("POST", "/astks", api.operator, {"name": "as-imported", "key": secrets.token_hex(16)})
    alice_key = (await api.ok("GET", "/me", alice))["key_id"]
    return {
        "dev_eui": devices,
        "net_id": ["000013"],
        "home_net_id": ["000013"],
        "visited_net_id": ["00002a"],
        "name": ["as-op", "as-imported"],
        "id": ["admin", "acme", "alice"],
        "key_id": [alice_key],
    }


def config(known: dict[str, list[str]], database: str) -> str:
    """schemathesis.toml: path parameters take a known identifier half of the time, so requests reach the data."""
    lines = []
    for name, values in known.items():
        lines += [f"[dictionaries.{name}]", "values = [" + ", ".join(f'"{v}"' for v in values) + "]", ""]
    lines.append("[parameters]")
    lines += [f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}' for name in known]
    # What only the daemon's state can decide, the document cannot say: a schema-valid request may be refused
    # there (invalid-request, or import-failed for a file's rows), and only there.
    for operation, why in STATE_DEPENDENT.items():
        statuses = ", ".join(f'"{s}"' for s in (*ACCEPTED, *why))
        lines += [
            "",
            "[[operations]]",
            f'include-name = "{operation}"',
            f"checks.positive_data_acceptance.expected-statuses = [{statuses}]",
        ]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(300)
async def test_schemathesis_finds_no_server_error_and_no_deviation(api: Any, eui: Any, tmp_path: Path) -> None:
    (tmp_path / "schemathesis.toml").write_text(config(await populate(api, eui), api.server.database.backend))
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file", str(tmp_path / "schemathesis.toml"),
        "run",
        f"{api.base}/openapi.json",
        "--checks", "all",
        "--mode", "all",
        "--header", f"Authorization: Bearer {api.operator}",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", "25",
        "--seed", "20261127",
        "--workers", "1",
        "--generation-database", "none",
        "--request-timeout", "10",
        "--no-color",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=280)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-8000:]
    assert "No issues found" in text or " passed" in text, text[-2000:]


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_cursor_past_int4_is_an_empty_page(api: Any) -> None:
    for path in ("/audit", "/events"):
        page = await api.call("GET", f"{path}?after={2**31}", api.operator)
        assert page.status == 200, page.body
