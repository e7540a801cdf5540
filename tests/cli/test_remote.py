"""The ``jsd`` CLI against the real daemon's REST API: the ownership story from the operator's first account
to a re-claim, ``--json`` answers that parse, and problems that read well and exit with their code.

The remote commands run in click's CliRunner on a worker thread (each command runs its own event loop while
the daemon serves on the test's loop); the local-mode bootstrap runs ``python -m jsd`` as an operator would.
"""

from __future__ import annotations

import asyncio
import csv
import json
import secrets
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from jsd_cli import main
from jsd_sim import SimDevice

HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"


@dataclass
class Cli:
    """Runs ``jsd`` commands against one daemon, with the API key given in the environment."""

    url: str
    local_env: dict[str, str]

    async def __call__(
        self, *args: str, key: str | None = None, stdin: str | None = None, profile: Path | None = None
    ) -> Result:
        env: dict[str, str | None] = {"JSD_URL": self.url, "JSD_API_KEY": key, "JSD_API_KEY_FILE": None}
        env["JSD_PROFILE"] = str(profile or Path(self.local_env["JSD_GENERAL_STATE_DIR"]) / "no-profile.toml")
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, main, list(args), input=stdin, env=env, catch_exceptions=False)

    async def local(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``jsd`` in direct database mode on the daemon's database and HSM token (no API key).

        Run off the event loop: the daemon under test shares the loop, and a transaction it has open must be
        able to finish while the command waits for the database (a blocked loop held its lock for 10 s).
        """
        command = [sys.executable, "-m", "jsd", *args]
        run = subprocess.run
        return await asyncio.to_thread(run, command, env=self.local_env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def cli(jsd_server: Any, local_env: dict[str, str]) -> Cli:
    return Cli(jsd_server.url.rstrip("/"), local_env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def bootstrap(cli: Cli, tmp_path: Path) -> dict[str, str]:
    """The first operator in local mode, then a manufacturer and a subscriber through the API."""
    made = await cli.local("accounts", "create", "admin", "--kind", "operator", "--json")
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout)
    assert answer["account"] == {**answer["account"], "id": "admin", "kind": "operator"}
    admin = answer["api_key"]["key"]
    assert admin.startswith("jsd_") and "admin" in answer["api_key"]["scopes"]

    text = ok(
        await cli(
            "accounts", "create", "acme", "--kind", "manufacturer", "--out", str(tmp_path / "acme.key"), key=admin
        )
    )
    assert "account acme (manufacturer) created" in text and "jsd_" not in text
    assert mode(tmp_path / "acme.key") == 0o600
    sub = json.loads(ok(await cli("accounts", "create", "farm", "--kind", "subscriber", "--json", key=admin)))
    listed = json.loads(ok(await cli("accounts", "list", "--json", key=admin)))
    assert {"admin", "acme", "farm"} <= {a["id"] for a in listed["accounts"]}
    farm_keys = json.loads(ok(await cli("accounts", "keys", "farm", "--json", key=admin)))
    assert [k["key_id"] for k in farm_keys["keys"]] == [sub["api_key"]["key_id"]]
    return {"admin": admin, "acme": (tmp_path / "acme.key").read_text().strip(), "farm": sub["api_key"]["key"]}


async def lbi_join(url: str, device: SimDevice, token: str) -> dict[str, Any]:
    body = {
        "ProtocolVersion": "1.0",
        "SenderID": HOME,
        "ReceiverID": JOIN_EUI,
        "TransactionID": 7,
        "MessageType": "JoinReq",
        "MACVersion": device.mac_version,
        "PHYPayload": device.join_request().hex(),
        "DevEUI": device.dev_eui.hex(),
        "DevAddr": "26011bda",
        "DLSettings": "00",
        "RxDelay": 1,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/", json=body, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        answer: dict[str, Any] = await response.json()
        return answer


async def test_story_import_label_claim_netid_astk_join_release_reclaim(cli: Cli, tmp_path: Path) -> None:
    keys = await bootstrap(cli, tmp_path)
    admin, acme, farm = keys["admin"], keys["acme"], keys["farm"]

    kek, ns_token = secrets.token_bytes(16), secrets.token_urlsafe(24)
    (tmp_path / "kek").write_text(kek.hex())
    (tmp_path / "ns-token").write_text(ns_token)
    label = f"ns-{secrets.token_hex(4)}"  # one HSM token serves the whole run
    text = ok(
        await cli(
            "ns",
            "add",
            HOME,
            "--kek-label",
            label,
            "--kek-file",
            str(tmp_path / "kek"),
            "--token-file",
            str(tmp_path / "ns-token"),
            key=admin,
        )
    )
    assert f"network server {HOME} added" in text
    servers = json.loads(ok(await cli("ns", "list", "--json", key=admin)))["network_servers"]
    assert [s["net_id"] for s in servers] == [HOME] and servers[0]["has_token"]

    app_keys = {f"00a0000000000{i:03x}": secrets.token_bytes(16) for i in (1, 3)}
    rows = [
        "dev_eui,join_eui,mac_version,name,app_key,nwk_key,generate_keys",
        f"00a0000000000001,{JOIN_EUI},1.0.3,meter 1,{app_keys['00a0000000000001'].hex()},,",
        f"00a0000000000002,{JOIN_EUI},1.1,meter 2,,,true",
        f"00a0000000000003,{JOIN_EUI},1.0.4,meter 3,{app_keys['00a0000000000003'].hex()},,false",
    ]
    source = tmp_path / "batch.csv"
    source.write_text("\n".join(rows) + "\n")
    result = await cli("devices", "import", str(source), key=acme)
    assert "3 created, 0 unchanged; 3 owner tokens in" in ok(result)
    answer_file = tmp_path / "batch.csv.tokens.jsonl"
    assert mode(answer_file) == 0o600
    lines = [json.loads(line) for line in answer_file.read_text().splitlines()]
    assert lines[-1] == {"summary": {"created": 3, "unchanged": 0}}
    by_eui = {line["dev_eui"]: line for line in lines[:-1]}
    assert by_eui.keys() == {"00a0000000000001", "00a0000000000002", "00a0000000000003"}
    assert by_eui["00a0000000000002"]["app_key"] and by_eui["00a0000000000002"]["nwk_key"]
    assert all(len(line["owner_token"]) == 32 for line in by_eui.values())

    assert "importing batch.csv: 3 devices in" in result.stderr, result.stderr
    before = listing(tmp_path)
    rerun = ok(await cli("devices", "import", str(source), key=acme))
    assert "0 created, 3 unchanged; no new owner tokens, no answer file written" in rerun
    assert listing(tmp_path) == before and mode(answer_file) == 0o600
    again = json.loads(
        ok(await cli("devices", "import", str(source), "--out", str(tmp_path / "again.jsonl"), "--json", key=acme))
    )
    assert again == {"summary": {"created": 0, "unchanged": 3}, "out": None}
    more = tmp_path / "more.csv"
    more.write_text(rows[0] + "\n" + rows[1] + "\n" + f"00a0000000000004,{JOIN_EUI},1.0.4,meter 4,,,true\n")
    (tmp_path / "more.csv.tokens.jsonl").write_text("earlier tokens\n")
    grown = ok(await cli("devices", "import", str(more), key=acme))
    assert "1 created, 1 unchanged; 1 owner tokens in " + str(tmp_path / "more.csv.tokens.1.jsonl") in grown
    assert (tmp_path / "more.csv.tokens.jsonl").read_text() == "earlier tokens\n"
    assert mode(tmp_path / "more.csv.tokens.1.jsonl") == 0o600
    assert not [name for name in listing(tmp_path) if name.endswith(".partial")]
    ok(await cli("devices", "delete", "00a0000000000004", "--yes", key=acme))
    typo = tmp_path / "typo.csv"
    typo.write_text("\n".join([rows[0].replace("app_key", "appkey"), *rows[1:]]) + "\n")
    refused = await cli("devices", "import", str(typo), key=acme)
    assert refused.exit_code != 0 and "did you mean app_key?" in refused.stderr, refused.stderr
    assert refused.stderr.count("appkey") == 1 and "the CSV header is wrong" in refused.stderr, refused.stderr
    assert not [name for name in listing(tmp_path) if name.startswith(("typo.csv.", ".typo"))]

    ok(await cli("labels", str(answer_file), "--out", str(tmp_path / "labels"), "--format", "svg"))
    with (tmp_path / "labels" / "labels.csv").open() as index:
        qr_of = {row["dev_eui"].lower(): row["qr"] for row in csv.DictReader(index)}
    assert len(qr_of) == 3

    paged = json.loads(ok(await cli("devices", "list", "--limit", "1", "--all", "--json", key=acme)))
    assert [d["dev_eui"] for d in paged["devices"]] == sorted(by_eui) and paged["next"] is None
    first_page = await cli("devices", "list", "--limit", "2", key=acme)
    assert "00a0000000000002" in ok(first_page) and "more: --after 00a0000000000002" in first_page.stderr

    dev = "00a0000000000001"
    claimed = json.loads(ok(await cli("claim", "--qr", qr_of[dev], "--json", key=farm)))
    assert claimed["dev_eui"] == dev and claimed["state"] == "claimed" and claimed["owner"] == "farm"
    (tmp_path / "tok3").write_text(by_eui["00a0000000000003"]["owner_token"])
    assert "claimed 00a0000000000003" in ok(
        await cli("claim", "00a0000000000003", "--token-file", str(tmp_path / "tok3"), key=farm)
    )
    twice = await cli(
        "claim", "00a0000000000003", "--token-file", "-", stdin=by_eui["00a0000000000003"]["owner_token"], key=farm
    )
    assert twice.exit_code == 5 and twice.stderr.startswith("error: Claim failed"), twice.stderr
    gone = await cli("devices", "show", dev, key=acme)
    assert gone.exit_code == 3 and gone.stderr.startswith("error: Not found"), gone.stderr

    astk_name = f"as-{secrets.token_hex(4)}"
    text = ok(await cli("astks", "create", astk_name, "--out", str(tmp_path / "astk.hex"), key=farm))
    assert f"ASTK {astk_name} generated in the HSM" in text and mode(tmp_path / "astk.hex") == 0o600
    astk = bytes.fromhex((tmp_path / "astk.hex").read_text().strip())
    again_export = await cli("astks", "export", astk_name, "--out", str(tmp_path / "astk2.hex"), key=farm)
    assert again_export.exit_code == 5 and not (tmp_path / "astk2.hex").exists()
    assert json.loads(ok(await cli("devices", "set-netid", dev, HOME, "--json", key=farm)))["home_net_id"] == HOME
    assert "astk:" in ok(await cli("devices", "set-astk", dev, astk_name, key=farm))

    device = SimDevice(bytes.fromhex(dev), bytes.fromhex(JOIN_EUI), "1.0.3", app_keys[dev])
    join = await lbi_join(cli.url, device, ns_token)
    assert join["Result"]["ResultCode"] == "Success", join
    session = device.accept(bytes.fromhex(join["PHYPayload"]))
    assert aes_key_unwrap(astk, bytes.fromhex(join["AppSKey"]["AESKey"])) == session.keys.app_s_key

    text = ok(await cli("devices", "release", dev, "--out", str(tmp_path / "new-token"), key=farm))
    assert f"device {dev} released" in text and "new owner token written to" in text
    assert mode(tmp_path / "new-token") == 0o600
    assert (await cli("devices", "show", dev, key=farm)).exit_code == 3
    reclaimed = await cli("claim", dev, "--token-file", str(tmp_path / "new-token"), "--json", key=farm)
    assert json.loads(ok(reclaimed))["owner"] == "farm"
    old_token = await cli("claim", dev, "--token-file", "-", stdin=by_eui[dev]["owner_token"], key=farm)
    assert old_token.exit_code == 5

    audit = json.loads(ok(await cli("audit", "--dev-eui", dev, "--json", key=farm)))
    actions = [entry["action"] for entry in audit["entries"]]
    assert actions and all(entry["dev_eui"] == dev for entry in audit["entries"])
    assert "ACTION" in ok(await cli("audit", "--dev-eui", dev, key=farm))
    assert all(t not in json.dumps(audit) for t in (by_eui[dev]["owner_token"], astk.hex()))


async def test_import_with_bad_rows_reports_lines_and_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    keys = await bootstrap(cli, tmp_path)
    source = tmp_path / "bad.jsonl"
    source.write_text(
        json.dumps({"dev_eui": "00b0000000000001", "join_eui": JOIN_EUI, "mac_version": "1.0.3", "generate_keys": True})
        + "\n"
        + json.dumps({"dev_eui": "00b0000000000002", "join_eui": JOIN_EUI, "mac_version": "9.9", "generate_keys": True})
        + "\n"
        + json.dumps({"dev_eui": "zz", "join_eui": JOIN_EUI, "mac_version": "1.0.3", "generate_keys": True})
        + "\n"
    )
    result = await cli("devices", "import", str(source), key=keys["acme"])
    assert result.exit_code == 2, result.stderr
    assert "error: Import refused" in result.stderr
    assert "  line 2: mac_version: " in result.stderr and "  line 3: dev_eui: " in result.stderr
    assert not (tmp_path / "bad.jsonl.tokens.jsonl").exists()
    assert json.loads(ok(await cli("devices", "list", "--json", key=keys["acme"])))["devices"] == []

    one = {"dev_eui": "00b0000000000009", "join_eui": JOIN_EUI, "mac_version": "1.1", "generate_keys": True}
    added = await cli(
        "devices",
        "add",
        "--from-file",
        "-",
        "--out",
        str(tmp_path / "one.json"),
        stdin=json.dumps(one),
        key=keys["acme"],
    )
    assert ok(added).startswith("device 00b0000000000009 created\nimport answer written to")
    answer = json.loads((tmp_path / "one.json").read_text())
    assert mode(tmp_path / "one.json") == 0o600 and len(answer["owner_token"]) == 32 and answer["nwk_key"]

    # a well-formed file the registry refuses (that DevEUI exists with other content): a conflict, not bad input
    taken = tmp_path / "taken.jsonl"
    taken.write_text(json.dumps(dict(one, mac_version="1.0.4")) + "\n")
    conflict = await cli("devices", "import", str(taken), key=keys["acme"])
    assert conflict.exit_code == 5 and conflict.stderr.startswith("error: Conflict: "), conflict.stderr
    assert "  line 1: dev_eui: device 00b0000000000009 exists already" in conflict.stderr
    assert not (tmp_path / "taken.jsonl.tokens.jsonl").exists()


async def test_problems_are_readable_with_their_exit_codes(cli: Cli, tmp_path: Path) -> None:
    keys = await bootstrap(cli, tmp_path)
    no_key = await cli("events")  # an account's command: no local mode to fall back to
    assert no_key.exit_code == 4 and "no API key" in no_key.stderr
    wrong = await cli("devices", "list", key="jsd_000000000000_" + "A" * 43)
    assert wrong.exit_code == 4 and wrong.stderr.startswith("error: Authentication required"), wrong.stderr
    forbidden = await cli("accounts", "list", key=keys["farm"])
    assert forbidden.exit_code == 4 and forbidden.stderr.startswith("error: Not allowed"), forbidden.stderr
    invalid = await cli("devices", "set-netid", "00a0000000000009", "zz", key=keys["farm"])
    assert invalid.exit_code in (2, 3), invalid.stderr
    conflict = await cli("accounts", "create", "farm", "--kind", "subscriber", key=keys["admin"])
    assert conflict.exit_code == 5 and conflict.stderr.startswith("error: Conflict"), conflict.stderr
    claim_only = json.loads(
        ok(await cli("accounts", "create-key", "farm", "--scope", "claim", "--json", key=keys["farm"]))
    )
    assert claim_only["scopes"] == ["claim"]
    scoped = await cli("devices", "list", key=claim_only["key"])
    assert scoped.exit_code == 4 and scoped.stderr.startswith("error: Not allowed"), scoped.stderr
    problem_json = await cli("devices", "show", "00a0000000000009", "--json", key=keys["farm"])
    assert problem_json.exit_code == 3 and json.loads(problem_json.stdout)["type"] == "urn:jsd:problem:not-found"

    unreachable = await cli("--url", "http://127.0.0.1:9", "devices", "list", key=keys["farm"])
    assert unreachable.exit_code == 1 and "error: cannot connect to http://127.0.0.1:9" in unreachable.stderr

    for _ in range(6):  # ownership.claim_failures_per_device, then one more uses up the account's allowance
        failed = await cli("claim", "00a0000000000009", "--token-file", "-", stdin="00" * 16, key=keys["farm"])
        assert failed.exit_code == 5 and failed.stderr.startswith("error: Claim failed"), failed.stderr
    limited = await cli("claim", "00a0000000000009", "--token-file", "-", stdin="00" * 16, key=keys["farm"])
    assert limited.exit_code == 5 and "\n  retry after " in limited.stderr, limited.stderr

    revoked_id = keys["farm"].split("_")[1]
    assert "revoked" in ok(await cli("accounts", "revoke-key", revoked_id, key=keys["admin"]))
    after = await cli("devices", "list", key=keys["farm"])
    assert after.exit_code == 4, after.stderr


async def test_reissue_token_replaces_a_lost_one(cli: Cli, tmp_path: Path) -> None:
    keys = await bootstrap(cli, tmp_path)
    one = {"dev_eui": "00c0000000000001", "join_eui": JOIN_EUI, "mac_version": "1.0.4", "generate_keys": True}
    ok(
        await cli(
            "devices",
            "add",
            "--from-file",
            "-",
            "--out",
            str(tmp_path / "one.json"),
            stdin=json.dumps(one),
            key=keys["acme"],
        )
    )
    lost = json.loads((tmp_path / "one.json").read_text())["owner_token"]
    refused = await cli("devices", "reissue-token", one["dev_eui"], key=keys["farm"])
    assert refused.exit_code == 3 and "Not found" in refused.stderr
    text = ok(await cli("devices", "reissue-token", one["dev_eui"], "--out", str(tmp_path / "new.token"),
                        key=keys["acme"]))  # fmt: skip
    assert text.startswith("device 00c0000000000001 has a new owner token") and mode(tmp_path / "new.token") == 0o600
    fresh = (tmp_path / "new.token").read_text().strip()
    assert fresh != lost and fresh not in text
    (tmp_path / "lost.token").write_text(lost)
    old = await cli("claim", one["dev_eui"], "--token-file", str(tmp_path / "lost.token"), key=keys["farm"])
    assert old.exit_code == 5
    claimed = json.loads(ok(await cli("claim", one["dev_eui"], "--token-file", str(tmp_path / "new.token"),
                                      "--json", key=keys["farm"])))  # fmt: skip
    assert claimed["owner"] == "farm"

    # The released device gets a new label from the release answer, and that label claims it.
    answer = tmp_path / "released.json"
    answer.write_text(ok(await cli("devices", "release", one["dev_eui"], "--json", key=keys["farm"])))
    ok(await cli("labels", str(answer), "--out", str(tmp_path / "new-label"), "--format", "svg"))
    with (tmp_path / "new-label" / "labels.csv").open() as index:
        (row,) = csv.DictReader(index)
    assert row["dev_eui"] == one["dev_eui"].upper()
    again = json.loads(ok(await cli("claim", "--qr", row["qr"], "--json", key=keys["farm"])))
    assert again["owner"] == "farm"


async def test_one_command_tree_one_error_format_json_everywhere(cli: Cli, tmp_path: Path) -> None:
    """--version, click's own errors in the CLI's format, problem JSON under --json, deprecated aliases."""
    assert ok(await cli("--version")).startswith("jsd ")
    usage = await cli("devices", "show", "0102")
    assert usage.exit_code == 2 and usage.stderr.startswith("error: ") and "Error:" not in usage.stderr
    unknown = await cli("devices", "frobnicate", "--json")
    assert unknown.exit_code == 2 and json.loads(unknown.stdout)["type"] == "urn:jsd:problem:invalid-request"
    keys = await bootstrap(cli, tmp_path)
    old = await cli("account", "list", "--json", key=keys["admin"])
    assert "warning: `jsd account` is deprecated: use `jsd accounts`" in old.stderr
    assert {a["id"] for a in json.loads(ok(old))["accounts"]} >= {"admin", "acme", "farm"}
    help_text = ok(await cli("--help"))
    commands = {line.split()[0] for line in help_text.split("Commands:")[1].splitlines() if line.startswith("  ")}
    assert {"accounts", "devices", "astks", "ns", "claim", "events", "whoami", "login"} <= commands
    assert not commands & {"account", "device", "astk"}  # the old names work, hidden

    made = json.loads(ok(await cli("accounts", "create-key", "farm", "--json", key=keys["farm"])))
    revoked = json.loads(ok(await cli("accounts", "revoke-key", made["key_id"], "--json", key=keys["farm"])))
    assert revoked == {"key_id": made["key_id"], "revoked": True}
    again = await cli("accounts", "revoke-key", made["key_id"], "--json", key=keys["farm"])
    assert again.exit_code == 5 and json.loads(again.stdout)["type"] == "urn:jsd:problem:conflict"


async def test_whoami_login_profile_events_warnings_delete_and_piped_token(cli: Cli, tmp_path: Path) -> None:
    keys = await bootstrap(cli, tmp_path)
    farm_key = tmp_path / "farm.key"
    farm_key.write_text(keys["farm"] + "\n")
    assert ok(await cli("whoami", key=keys["farm"])).startswith("farm (subscriber), key ")

    profile = tmp_path / "cfg" / "profile.toml"
    text = ok(await cli("login", "--api-key-file", str(farm_key), profile=profile))
    assert f"logged in to {cli.url} as farm (subscriber)" in text and mode(profile) == 0o600
    assert keys["farm"] not in profile.read_text() and str(farm_key) in profile.read_text()
    me = json.loads(ok(await cli("whoami", "--json", profile=profile)))  # no key given: the profile's
    assert me["account"] == "farm" and me["url"] == cli.url
    assert json.loads(ok(await cli("whoami", "--json", key=keys["acme"], profile=profile)))["account"] == "acme"
    bad_login = await cli("login", "--api-key-file", str(tmp_path / "acme.key"), "--url", "http://127.0.0.1:9")
    assert bad_login.exit_code == 1 and "cannot connect" in bad_login.stderr

    one = {"dev_eui": "00d0000000000001", "join_eui": JOIN_EUI, "mac_version": "1.0.4", "generate_keys": True}
    added = json.loads(
        ok(await cli("devices", "add", "--from-file", "-", "--json", stdin=json.dumps(one), key=keys["acme"]))
    )
    claimed = await cli("claim", one["dev_eui"], stdin=added["owner_token"] + "\n", profile=profile)  # piped, no prompt
    assert "claimed 00d0000000000001" in ok(claimed) and "Warning" not in claimed.stderr

    unknown_ns = await cli("devices", "set-netid", one["dev_eui"], "600013", profile=profile)
    assert "warning: no network server with NetID 600013 is registered yet" in unknown_ns.stderr
    assert "home_net_id:" in ok(unknown_ns)
    as_json = json.loads(ok(await cli("devices", "set-netid", one["dev_eui"], "600013", "--json", profile=profile)))
    assert as_json["home_net_id"] == "600013" and as_json["warnings"] == [
        "no network server with NetID 600013 is registered yet: no NS can join the device until one is"
    ]
    cleared = json.loads(ok(await cli("devices", "set-netid", one["dev_eui"], "--clear", "--json", profile=profile)))
    assert "warnings" not in cleared

    listed = json.loads(ok(await cli("events", "--dev-eui", one["dev_eui"], "--json", profile=profile)))
    assert [e["type"] for e in listed["events"]] == [
        "device.claimed",
        "device.netid_set",
        "device.netid_set",
        "device.netid_set",
    ]
    table = ok(await cli("events", "--type", "device.claimed", profile=profile))
    assert table.splitlines()[0].split() == ["SEQ", "TIME", "TYPE", "DEV_EUI", "DATA"] and one["dev_eui"] in table

    two = {"dev_eui": "00d0000000000002", "join_eui": JOIN_EUI, "mac_version": "1.0.4", "generate_keys": True}
    ok(await cli("devices", "add", "--from-file", "-", stdin=json.dumps(two), key=keys["acme"]))
    unconfirmed = await cli("devices", "delete", two["dev_eui"], key=keys["acme"])
    assert unconfirmed.exit_code == 2 and "give --yes" in unconfirmed.stderr
    assert (
        json.loads(ok(await cli("devices", "show", two["dev_eui"], "--json", key=keys["acme"])))["state"] == "unclaimed"
    )
    deleted = json.loads(ok(await cli("devices", "delete", two["dev_eui"], "--yes", "--json", key=keys["acme"])))
    assert deleted == {"dev_eui": two["dev_eui"], "deleted": True}
    assert (await cli("devices", "show", two["dev_eui"], key=keys["acme"])).exit_code == 3


async def test_ns_add_writes_generated_secrets_to_files_and_the_local_bootstrap_stays_quiet(
    cli: Cli, tmp_path: Path
) -> None:
    cli.local_env.pop("JSD_LOG_LEVEL", None)  # the default level, as a user has it
    made = await cli.local("accounts", "create", "admin", "--kind", "operator", "--json")
    assert made.returncode == 0 and made.stderr == ""  # no library log lines (alembic used to print nine)
    admin = json.loads(made.stdout)["api_key"]["key"]
    out = tmp_path / "ns-secrets"
    net_id = f"{secrets.randbelow(0xFFFFFF):06x}"
    added = await cli(
        "ns",
        "add",
        net_id,
        "--kek-label",
        f"ns-{net_id}-t",
        "--generate-kek",
        "--generate-token",
        "--out",
        str(out),
        key=admin,
    )
    assert ok(added) and added.stderr == ""
    kek, token = out / f"ns-{net_id}.kek", out / f"ns-{net_id}.token"
    assert mode(kek) == 0o600 and mode(token) == 0o600 and len(bytes.fromhex(kek.read_text().strip())) == 16
    assert kek.read_text().strip() not in added.stdout and token.read_text().strip() not in added.stdout
    assert f"written to {kek}" in added.stdout
    again = await cli("ns", "add", net_id, "--generate-kek", "--generate-token", "--out", str(out), key=admin)
    assert again.exit_code == 2 and "exists and may hold an earlier secret" in again.stderr
    listed = json.loads(ok(await cli("ns", "list", "--json", key=admin)))
    assert net_id in [n["net_id"] for n in listed["network_servers"]]
    text = ok(await cli("ns", "list", key=admin)).splitlines()
    assert text[0].split() == ["NET_ID", "KEK_LABEL", "AUTH", "NAME"]  # a header, as every other list has
    assert [net_id, f"ns-{net_id}-t", "token"] in [line.split()[:3] for line in text[1:]]
    removed = json.loads(ok(await cli("ns", "remove", net_id, "--json", key=admin)))
    assert removed == {"net_id": net_id, "removed": True}


async def test_local_mode_is_only_for_what_no_daemon_can_do(cli: Cli) -> None:
    """Without a key the account commands that have a REST call ask for one; --local says where it applies."""
    no_key = await cli("ns", "list")
    assert no_key.exit_code == 4 and "no API key" in no_key.stderr
    forced = await cli("--local", "devices", "show", "0102030405060708", key="jsd_unused")
    assert forced.exit_code == 2 and "goes through the daemon's API" in forced.stderr
