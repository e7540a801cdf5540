"""Isolation, endpoint by endpoint: another account's resource answers exactly like one that does not exist.

The comparison is on the whole answer (status, content type, Retry-After, body) with the two identifiers
blanked, so not even a detail text may tell them apart. Admin routes are `forbidden` for everyone else, a
manufacturer never reads a key back, and failed claims are rate limited per claimant, never against the owner.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

JOIN_EUI = "70b3d57ed0000001"
HOME = "000013"
NOBODY_KEY_ID = "0123456789ab"


@dataclass
class World:
    acme: str
    globex: str
    alice: str
    bob: str
    claimed: str  # acme made it, alice owns it
    unclaimed: str  # acme's, nobody claimed it
    bobs: str  # acme made it, bob owns it
    foreign: str  # globex's, unclaimed
    nowhere: str  # never existed
    claimed_token: str
    app_keys: list[str]


async def make_world(api: Any, eui: Any) -> World:
    acme, globex = await api.account("acme", "manufacturer"), await api.account("globex", "manufacturer")
    alice, bob = await api.account("alice", "subscriber"), await api.account("bob", "subscriber")
    await api.network_server(HOME)
    app_keys: list[str] = []
    tokens: dict[str, str] = {}

    async def device(key: str) -> str:
        dev_eui, app_key = eui(), secrets.token_hex(16)
        app_keys.append(app_key)
        body = {"dev_eui": dev_eui, "join_eui": JOIN_EUI, "mac_version": "1.0.3", "app_key": app_key}
        tokens[dev_eui] = (await api.ok("POST", "/devices", key, body))["owner_token"]
        return dev_eui

    claimed, unclaimed, bobs, foreign = await device(acme), await device(acme), await device(acme), await device(globex)
    await api.ok("POST", "/claims", alice, {"dev_eui": claimed, "owner_token": tokens[claimed]})
    await api.ok("POST", "/claims", bob, {"dev_eui": bobs, "owner_token": tokens[bobs]})
    await api.ok("POST", "/astks", alice, {"name": "as-alice", "key": secrets.token_hex(16)})
    await api.ok("POST", "/astks", bob, {"name": "as-bob"})
    await api.ok("PUT", f"/devices/{claimed}/net-id", alice, {"net_id": HOME})
    await api.ok("PUT", f"/devices/{claimed}/astk", alice, {"astk": "as-alice"})
    return World(acme, globex, alice, bob, claimed, unclaimed, bobs, foreign, eui(), tokens[claimed], app_keys)


async def _one_window(window: int, needed: float = 30.0) -> None:
    """Start a failed-claim test in a fresh counting window, so the counters do not restart in its middle."""
    left = window - time.time() % window
    if left < needed:
        await asyncio.sleep(left + 0.1)


DEVICE_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/devices/{}", None),
    ("DELETE", "/devices/{}", None),
    ("PUT", "/devices/{}/net-id", {"net_id": HOME}),
    ("PUT", "/devices/{}/astk", {"astk": None}),
    ("POST", "/devices/{}/release", None),
    ("POST", "/devices/{}/owner-token", None),
    ("POST", "/devices/{}/reset-nonces", None),
]


async def same_as_nothing(api: Any, method: str, path: str, key: str, body: Any, real: str, absent: str) -> Any:
    """Call for `real` (not the caller's) and for `absent` (nonexistent): the answers must be identical."""
    args = () if body is None else (body,)
    there = await api.call(method, path.format(real), key, *args)
    gone = await api.call(method, path.format(absent), key, *args)
    assert there.comparable(real) == gone.comparable(absent), (method, path, there.body, gone.body)
    return there


async def test_devices_of_other_accounts_do_not_exist(api: Any, eui: Any) -> None:
    w = await make_world(api, eui)
    cases = [
        ("bob", w.bob, w.claimed),  # a subscriber, another subscriber's device
        ("alice", w.alice, w.unclaimed),  # a subscriber, an unclaimed device
        ("acme", w.acme, w.claimed),  # the manufacturer, once its device is claimed
        ("globex", w.globex, w.unclaimed),  # a manufacturer, another maker's device
        ("acme", w.acme, w.foreign),
    ]
    before = await api.snapshot(w.alice, w.bob)
    for who, key, target in cases:
        for method, path, body in DEVICE_ROUTES:
            reply = await same_as_nothing(api, method, path, key, body, target, w.nowhere)
            assert reply.problem == "not-found", (who, method, path, reply.body)
        for query in ("/audit?dev_eui={}", "/events?dev_eui={}"):
            page = await api.ok("GET", query.format(target), key)
            own = page.get("entries", page.get("events"))
            assert all(item["account"] == who for item in own), (who, query, own)
        listed = {d["dev_eui"] for d in (await api.ok("GET", "/devices?limit=1000", key))["devices"]}
        assert target not in listed
    assert await api.snapshot(w.alice, w.bob) == before
    for who, key in (("acme", w.acme), ("globex", w.globex), ("alice", w.alice), ("bob", w.bob)):
        events = (await api.ok("GET", "/events?limit=1000", key))["events"]
        assert events and {e["account"] for e in events} == {who}
    assert {d["dev_eui"] for d in (await api.ok("GET", "/devices", w.acme))["devices"]} == {w.unclaimed}
    assert {d["dev_eui"] for d in (await api.ok("GET", "/devices", w.bob))["devices"]} == {w.bobs}
    assert (await api.ok("GET", f"/devices/{w.claimed}", w.alice))["manufacturer"] is None


async def test_claims_cannot_tell_unknown_from_taken(api: Any, eui: Any) -> None:
    w = await make_world(api, eui)
    wrong = secrets.token_hex(16)
    answers = set()
    for dev_eui, token in (
        (w.nowhere, wrong),  # no such device
        (w.claimed, wrong),  # someone else's device, wrong token
        (w.claimed, w.claimed_token),  # someone else's device, its spent token
        (w.unclaimed, wrong),  # a free device, wrong token
        (w.unclaimed, w.claimed_token),  # a free device, a spent token of another device
    ):
        reply = await api.call("POST", "/claims", w.bob, {"dev_eui": dev_eui, "owner_token": token})
        assert (reply.status, reply.problem) == (403, "claim-failed")
        answers.add(reply.comparable(dev_eui))
    assert len(answers) == 1
    assert (await api.ok("GET", f"/devices/{w.claimed}", api.operator))["owner"] == "alice"


async def test_accounts_keys_and_astks_of_others_do_not_exist(api: Any, eui: Any) -> None:
    w = await make_world(api, eui)
    alice_key_id = (await api.ok("GET", "/me", w.alice))["key_id"]
    before = await api.snapshot(w.alice, w.bob)
    for key in (w.bob, w.acme):
        for method, path, body in (
            ("GET", "/accounts/{}", None),
            ("GET", "/accounts/{}/keys", None),
            ("POST", "/accounts/{}/keys", {}),
        ):
            reply = await same_as_nothing(api, method, path, key, body, "alice", "nobody")
            assert reply.problem == "not-found"
        reply = await same_as_nothing(api, "DELETE", "/keys/{}", key, None, alice_key_id, NOBODY_KEY_ID)
        assert reply.problem == "not-found"
    exported = await same_as_nothing(api, "POST", "/astks/{}/export", w.bob, None, "as-alice", "as-nothing")
    assert exported.problem == "not-found"
    theirs = await api.call("PUT", f"/devices/{w.bobs}/astk", w.bob, {"astk": "as-alice"})
    absent = await api.call("PUT", f"/devices/{w.bobs}/astk", w.bob, {"astk": "as-nothing"})
    assert theirs.problem == "not-found"  # as if it did not exist: it does not, for bob
    assert theirs.comparable("as-alice") == absent.comparable("as-nothing")
    assert [a["name"] for a in (await api.ok("GET", "/astks", w.bob))["astks"]] == ["as-bob"]
    assert await api.snapshot(w.alice, w.bob) == before
    assert (await api.ok("GET", "/accounts/alice", w.alice))["id"] == "alice"


async def test_admin_routes_are_forbidden_to_everyone_else(api: Any, eui: Any) -> None:
    w = await make_world(api, eui)
    await api.ok("POST", "/roaming-agreements", api.operator, {"home_net_id": HOME, "visited_net_id": "00002a"})
    before = await api.snapshot(w.alice, w.bob)
    ns_body = {
        "net_id": "000099",
        "name": "x",
        "kek_label": "ns-x",
        "kek": secrets.token_hex(16),
        "generate_token": True,
    }
    routes: list[tuple[str, str, Any]] = [
        ("POST", "/accounts", {"id": "mallory", "kind": "operator"}),
        ("GET", "/accounts", None),
        ("POST", "/network-servers", ns_body),
        ("GET", "/network-servers", None),
        ("GET", f"/network-servers/{HOME}", None),
        ("DELETE", f"/network-servers/{HOME}", None),
        ("POST", "/roaming-agreements", {"home_net_id": HOME, "visited_net_id": "000077"}),
        ("GET", "/roaming-agreements", None),
        ("DELETE", f"/roaming-agreements/{HOME}/00002a", None),
    ]
    for key in (w.acme, w.alice):
        for method, path, body in routes:
            reply = await api.call(method, path, key, *(() if body is None else (body,)))
            assert (reply.status, reply.problem) == (403, "forbidden"), (method, path, reply.body)
    for key, method, path, body in (
        (w.acme, "POST", "/claims", {"dev_eui": w.unclaimed, "owner_token": secrets.token_hex(16)}),
        (w.acme, "POST", "/astks", {"name": "mine"}),
        (w.acme, "GET", "/astks", None),
        (w.acme, "PUT", f"/devices/{w.unclaimed}/net-id", {"net_id": HOME}),
        (
            w.alice,
            "POST",
            "/devices",
            {"dev_eui": eui(), "join_eui": JOIN_EUI, "mac_version": "1.0.3", "generate_keys": True},
        ),  # fmt: skip
        (w.alice, "DELETE", f"/devices/{w.claimed}", None),
    ):
        reply = await api.call(method, path, key, *(() if body is None else (body,)))
        assert (reply.status, reply.problem) == (403, "forbidden"), (method, path, reply.body)
    more = await api.call("POST", "/accounts/alice/keys", w.alice, {"scopes": ["admin"]})
    assert more.problem == "forbidden"
    assert await api.snapshot(w.alice, w.bob) == before


async def test_a_manufacturer_never_reads_a_key_back(api: Any, eui: Any) -> None:
    w = await make_world(api, eui)
    readable = []
    for path in ("/devices?limit=1000", f"/devices/{w.unclaimed}", "/events?limit=1000", "/audit?limit=1000", "/me"):
        readable.append((await api.call("GET", path, w.acme)).raw.decode().lower())
    again = {"dev_eui": w.unclaimed, "join_eui": JOIN_EUI, "mac_version": "1.0.3", "app_key": w.app_keys[1]}
    rerun = await api.call("POST", "/devices", w.acme, again)
    assert rerun.status == 201 and rerun.body["status"] == "unchanged"
    readable.append(rerun.raw.decode().lower())
    for key in w.app_keys:
        assert not any(key in text for text in readable)


async def test_failed_claims_are_rate_limited(api: Any, eui: Any) -> None:
    await _one_window(api.server.settings.get("ownership", "claim_window"))
    w = await make_world(api, eui)
    token = (await api.ok("POST", "/devices", w.acme, {"dev_eui": (target := eui()), "join_eui": JOIN_EUI,
                                                       "mac_version": "1.0.2", "generate_keys": True}))["owner_token"]  # fmt: skip
    per_device = api.server.settings.get("ownership", "claim_failures_per_device")
    for _ in range(per_device):
        reply = await api.call("POST", "/claims", w.bob, {"dev_eui": target, "owner_token": secrets.token_hex(16)})
        assert reply.problem == "claim-failed"
    # The device is under attack: one more wrong token uses up bob's allowance for the window ...
    again = await api.call("POST", "/claims", w.bob, {"dev_eui": target, "owner_token": secrets.token_hex(16)})
    assert again.problem == "claim-failed"
    limited = await api.call("POST", "/claims", w.bob, {"dev_eui": target, "owner_token": token})
    assert (limited.status, limited.problem) == (429, "rate-limited") and int(limited.headers["Retry-After"]) >= 1
    assert (await api.ok("GET", f"/devices/{target}", api.operator))["state"] == "unclaimed"
    # ... but the strangers' failures never refuse the right token of another claimant.
    claimed = await api.call("POST", "/claims", w.alice, {"dev_eui": target, "owner_token": token})
    assert (claimed.status, claimed.body["owner"]) == (200, "alice")
    carol = await api.account("carol", "subscriber")
    per_account = api.server.settings.get("ownership", "claim_failures_per_account")
    for _ in range(per_account):
        reply = await api.call("POST", "/claims", carol, {"dev_eui": eui(), "owner_token": secrets.token_hex(16)})
        assert reply.problem == "claim-failed"
    limited = await api.call("POST", "/claims", carol, {"dev_eui": w.unclaimed, "owner_token": secrets.token_hex(16)})
    assert (limited.status, limited.problem) == (429, "rate-limited") and int(limited.headers["Retry-After"]) >= 1
