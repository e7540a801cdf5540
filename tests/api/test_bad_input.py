"""Bad input for each endpoint: `invalid-request` naming the field, and nothing anyone can read has changed."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from jsd.lorawan.tr005 import DeviceQr, build_qr

JOIN_EUI = "70b3d57ed0000001"
HOME = "000013"

# (who, method, path, body, field named in errors[0]); {dev} = the subscriber's claimed device.
CASES: list[tuple[str, str, str, Any, str | None]] = [
    ("operator", "POST", "/accounts", {}, "id"),
    ("operator", "POST", "/accounts", {"id": "Not_A_Slug", "kind": "subscriber"}, "id"),
    ("operator", "POST", "/accounts", {"id": "zed", "kind": "king"}, "kind"),
    ("operator", "POST", "/accounts", {"id": "zed", "kind": "subscriber", "name": 7}, "name"),
    ("operator", "POST", "/accounts", {"id": "zed", "kind": "subscriber", "admin": True}, "admin"),
    ("operator", "POST", "/accounts", b"{not json", None),
    ("subscriber", "POST", "/accounts/alice/keys", {"scopes": "devices:read"}, "scopes"),
    ("subscriber", "POST", "/accounts/alice/keys", {"scopes": ["root"]}, "scopes"),
    ("subscriber", "POST", "/accounts/alice/keys", [], None),
    (
        "manufacturer",
        "POST",
        "/devices",
        {"dev_eui": "0102", "join_eui": JOIN_EUI, "mac_version": "1.0.3", "generate_keys": True},
        "dev_eui",
    ),  # fmt: skip
    (
        "manufacturer",
        "POST",
        "/devices",
        {"dev_eui": "0102030405060708", "join_eui": JOIN_EUI, "generate_keys": True},
        "mac_version",
    ),  # fmt: skip
    (
        "manufacturer",
        "POST",
        "/devices",
        {
            "dev_eui": "0102030405060708",
            "join_eui": JOIN_EUI,
            "mac_version": "1.0.3",
            "app_key": secrets.token_hex(16),
            "nwk_key": secrets.token_hex(16),
        },
        "nwk_key",
    ),  # fmt: skip
    (
        "manufacturer",
        "POST",
        "/devices",
        {
            "dev_eui": "0102030405060708",
            "join_eui": JOIN_EUI,
            "mac_version": "1.0.3",
            "generate_keys": True,
            "color": "red",
        },
        "color",
    ),  # fmt: skip
    ("manufacturer", "GET", "/devices?limit=0", None, "limit"),
    ("manufacturer", "GET", "/devices?limit=many", None, "limit"),
    ("manufacturer", "GET", "/devices?limit=1001", None, "limit"),
    ("manufacturer", "GET", "/devices?after=nothex", None, "after"),
    ("manufacturer", "GET", "/devices?limit=1&limit=2", None, "limit"),
    ("manufacturer", "GET", "/devices/0x12", None, "dev_eui"),
    ("manufacturer", "DELETE", "/devices/g102030405060708", None, "dev_eui"),
    ("subscriber", "POST", "/claims", {}, "dev_eui"),
    ("subscriber", "POST", "/claims", {"dev_eui": "0102030405060708"}, "owner_token"),
    ("subscriber", "POST", "/claims", {"dev_eui": "0102030405060708", "owner_token": "not a token!"}, "owner_token"),
    ("subscriber", "POST", "/claims", {"dev_eui": 42, "owner_token": "00" * 16}, "dev_eui"),
    ("subscriber", "POST", "/claims", {"qr": "LW:D0:nonsense"}, "qr"),
    ("subscriber", "POST", "/claims", {"qr": "LW:D0:70B3D57ED0000001:0102030405060708:00000000"}, "qr"),
    ("subscriber", "POST", "/claims", {"qr": "x", "dev_eui": "0102030405060708"}, "qr"),
    ("subscriber", "PUT", "/devices/{dev}/net-id", {"net_id": "0013"}, "net_id"),
    ("subscriber", "PUT", "/devices/{dev}/net-id", {}, "net_id"),
    ("subscriber", "PUT", "/devices/{dev}/net-id", {"net_id": 19}, "net_id"),
    ("subscriber", "PUT", "/devices/{dev}/astk", {"astk": 5}, "astk"),
    ("subscriber", "PUT", "/devices/{dev}/astk", {"name": "as1"}, "name"),
    ("subscriber", "POST", "/devices/{dev}/release", {"force": True}, "force"),
    ("subscriber", "POST", "/devices/{dev}/reset-nonces", b"[", None),
    ("manufacturer", "POST", "/devices/{dev}/owner-token", {"force": True}, "force"),
    ("manufacturer", "POST", "/devices/00112233/owner-token", None, "dev_eui"),
    ("subscriber", "POST", "/astks", {"name": "bad name"}, "name"),
    ("subscriber", "POST", "/astks", {"name": "as2", "key": "0011"}, "key"),
    ("subscriber", "POST", "/astks", {"key": "00" * 16}, "name"),
    ("subscriber", "POST", "/astks/as1/export", {"format": "pem"}, "format"),
    ("subscriber", "GET", "/audit?after=-1", None, "after"),
    ("subscriber", "GET", "/audit?dev_eui=12", None, "dev_eui"),
    ("subscriber", "GET", "/events?limit=5000", None, "limit"),
    ("subscriber", "GET", f"/events?type={'x' * 100}", None, "type"),
    (
        "operator",
        "POST",
        "/network-servers",
        {"net_id": "zz0013", "name": "n", "kek_label": "ns-n", "generate_token": True},
        "net_id",
    ),  # fmt: skip
    (
        "operator",
        "POST",
        "/network-servers",
        {"net_id": "000099", "name": "n", "kek_label": "ns-n", "kek": "00" * 16, "token": "short"},
        "token",
    ),  # fmt: skip
    ("operator", "POST", "/network-servers", {"net_id": "000099", "name": "n", "generate_token": True}, "kek_label"),
    ("operator", "GET", "/network-servers/0x13", None, "net_id"),
    ("operator", "GET", "/devices/01020304/nonces", None, "dev_eui"),
    ("operator", "GET", "/devices/zz02030405060708/nonces", None, "dev_eui"),
    ("operator", "DELETE", "/network-servers/00001g", None, "net_id"),
    ("operator", "POST", "/roaming-agreements", {"home_net_id": HOME}, "visited_net_id"),
    ("operator", "POST", "/roaming-agreements", {"home_net_id": "x", "visited_net_id": HOME}, "home_net_id"),
    ("operator", "DELETE", "/roaming-agreements/000013/zz", None, "visited_net_id"),
]




def state_refusals(qr: str) -> list[tuple[str, str, str, dict[str, Any], int, str]]:
    """Well-formed requests that the daemon's state or the caller's rights refuse: not a 400, so a client (and
    schemathesis) can tell "fix the request" from "the world is not as you think"."""
    bad_checksum = qr[:-4] + ("0000" if not qr.endswith("0000") else "0001")
    return [
        ("subscriber", "PUT", "/devices/{dev}/astk", {"astk": "no-such-astk"}, 404, "not-found"),
        ("subscriber", "POST", "/accounts/alice/keys", {"scopes": ["admin"]}, 403, "forbidden"),
        ("subscriber", "POST", "/claims", {"qr": bad_checksum}, 403, "claim-failed"),
        ("operator", "POST", "/network-servers", {"net_id": "000099", "kek_label": "ns-not-there",
                                                  "generate_token": True}, 409, "conflict"),  # fmt: skip
        ("manufacturer", "POST", "/devices", {"dev_eui": "0102030405060708", "join_eui": JOIN_EUI, "mac_version": "1.0.3",
                                              "secure_element": True, "tkm_info": "0001" + "00" * 8}, 409, "conflict"),  # fmt: skip
    ]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_bad_input_is_refused_and_changes_nothing(api: Any, eui: Any) -> None:
    keys = {
        "operator": api.operator,
        "manufacturer": await api.account("acme", "manufacturer"),
        "subscriber": await api.account("alice", "subscriber"),
    }
    device = eui()
    made = await api.ok("POST", "/devices", keys["manufacturer"], {"dev_eui": device, "join_eui": JOIN_EUI,
                                                                   "mac_version": "1.0.3", "generate_keys": True})  # fmt: skip
    await api.ok("POST", "/claims", keys["subscriber"], {"dev_eui": device, "owner_token": made["owner_token"]})
    await api.ok("POST", "/astks", keys["subscriber"], {"name": "as1"})
    await api.network_server(HOME)
    before = await api.snapshot(keys["manufacturer"], keys["subscriber"])
    qr = build_qr(DeviceQr(bytes.fromhex(JOIN_EUI), bytes.fromhex(device), owner_token="00" * 16))
    for who, method, path, body, status, problem in state_refusals(qr):
        reply = await api.call(method, path.replace("{dev}", device), keys[who], body)
        assert (reply.status, reply.problem) == (status, problem), (method, path, body, reply.body)
    for who, method, path, body, field in CASES:
        path = path.replace("{dev}", device)
        if isinstance(body, bytes):
            reply = await api.call(method, path, keys[who], data=body, headers={"Content-Type": "application/json"})
        else:
            reply = await api.call(method, path, keys[who], *(() if body is None else (body,)))
        assert (reply.status, reply.problem) == (400, "invalid-request"), (method, path, body, reply.body)
        errors = reply.body["errors"]
        assert errors and errors[0]["field"] == field, (method, path, body, errors)
        assert isinstance(errors[0]["reason"], str) and errors[0]["reason"]
    assert await api.snapshot(keys["manufacturer"], keys["subscriber"]) == before
    assert (await api.ok("GET", f"/devices/{device}", keys["subscriber"]))["owner"] == "alice"
