"""MQTT commands through the shared Mosquitto into the running app: round trips, idempotency, refusals.

The integrator side is a plain aiomqtt client; replies are checked against the REST API's answers for the
same device, so MQTT and REST agree on shapes and on who may do what.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiomqtt
import pytest

JOIN_EUI = "70b3d57ed0000001"
V5, V311 = aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311


@dataclass
class Setup:
    d: Any
    prefix: str
    alice_key: str
    bob_key: str
    tokens: dict[str, str]

    def topic(self, account: str, rest: str) -> str:
        return f"{self.prefix}/accounts/{account}/{rest}"


async def _setup(daemon: Any, subscribe: Any, prefix: str, protocol: str, devices: int = 3) -> Setup:
    d = await daemon(mqtt__host="127.0.0.1", mqtt__topic_prefix=prefix, mqtt__protocol=protocol)
    watcher = await subscribe(f"{prefix}/status")
    await watcher.wait(lambda ms: any(m.payload == b"online" for m in ms), what="the daemon online")
    maker, _ = await d.account("maker", "manufacturer")
    _, alice_key = await d.account("alice", "subscriber")
    _, bob_key = await d.account("bob", "subscriber")
    tokens = {}
    for _ in range(devices):
        eui = secrets.token_bytes(8).hex()
        imported = await d.service.devices.add_device(
            maker, {"dev_eui": eui, "join_eui": JOIN_EUI, "mac_version": "1.0.4", "generate_keys": True}
        )
        tokens[eui] = imported.owner_token
    return Setup(d, prefix, alice_key, bob_key, tokens)


async def _rest_device(s: Setup, key: str, eui: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{s.d.url}api/v1/devices/{eui}", headers={"Authorization": f"Bearer {key}"}) as response,
    ):
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def test_claim_round_trip_mqtt5_with_response_topic_and_correlation(
    daemon: Any, subscribe: Any, prefix: str
) -> None:
    s = await _setup(daemon, subscribe, prefix, "5")
    replies = s.topic("alice", "replies/session-7")
    client = await subscribe(replies, protocol=V5)
    eui, token = next(iter(s.tokens.items()))
    command = {"request_id": "claim-1", "command": "claim", "api_key": s.alice_key,
               "args": {"dev_eui": eui.upper(), "owner_token": token}}  # fmt: skip
    await client.command(s.topic("alice", "commands"), command, response_topic=replies, correlation=b"\x00c1")
    (reply,) = await client.wait(lambda ms: ms, what="the claim reply")
    assert reply.topic == replies and reply.properties.CorrelationData == b"\x00c1"
    assert reply.json["request_id"] == "claim-1" and reply.json["ok"] is True, reply.json
    assert reply.json["result"] == await _rest_device(s, s.alice_key, eui)
    assert reply.json["result"]["owner"] == "alice" and reply.json["result"]["state"] == "claimed"

    await client.command(s.topic("alice", "commands"), command, response_topic=replies, correlation=b"again")
    await client.wait(lambda ms: len(ms) == 2, what="the repeated claim's reply")
    assert client.messages[1].json == reply.json, "a retried claim gets the stored success, not claim-failed"
    assert client.messages[1].properties.CorrelationData == b"again"

    for name, args, expect in (
        ("set-netid", {"dev_eui": eui, "net_id": "00002A"}, {"home_net_id": "00002a"}),
        ("set-astk", {"dev_eui": eui, "astk": None}, {"astk": None}),
        ("set-netid", {"dev_eui": eui, "net_id": None}, {"home_net_id": None}),
    ):
        count = len(client.messages)
        await client.command(s.topic("alice", "commands"),
                             {"request_id": f"{name}-{count}", "command": name, "api_key": s.alice_key, "args": args},
                             response_topic=replies)  # fmt: skip
        await client.wait(lambda ms, n=count: len(ms) > n, what=f"the {name} reply")
        body = client.messages[-1].json
        assert body["ok"] is True, body
        assert {k: body["result"][k] for k in expect} == expect
        assert body["result"] == await _rest_device(s, s.alice_key, eui)


async def test_claim_round_trip_mqtt311_reply_to_and_default_replies(daemon: Any, subscribe: Any, prefix: str) -> None:
    s = await _setup(daemon, subscribe, prefix, "3.1.1")
    client = await subscribe(s.topic("alice", "replies/#"), protocol=V311)  # '#' matches the parent level too
    (eui_1, token_1), (eui_2, token_2) = list(s.tokens.items())[:2]
    mine = s.topic("alice", "replies/app-1")
    await client.command(s.topic("alice", "commands"), {
        "request_id": "c1", "command": "claim", "api_key": s.alice_key, "reply_to": mine,
        "args": {"dev_eui": eui_1, "owner_token": token_1}})  # fmt: skip
    await client.command(s.topic("alice", "commands"), {
        "request_id": "c2", "command": "claim", "api_key": s.alice_key,
        "args": {"dev_eui": eui_2, "owner_token": token_2.lower()}})  # fmt: skip
    await client.wait(lambda ms: len(ms) == 2, what="two replies")
    by_id = {m.json["request_id"]: m for m in client.messages}
    assert by_id["c1"].topic == mine and by_id["c2"].topic == s.topic("alice", "replies")
    assert by_id["c1"].json["ok"] and by_id["c2"].json["ok"]
    assert by_id["c2"].json["result"] == await _rest_device(s, s.alice_key, eui_2)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_release_token_only_in_the_first_reply_and_it_claims_again(
    daemon: Any, subscribe: Any, prefix: str
) -> None:
    s = await _setup(daemon, subscribe, prefix, "5", devices=1)
    alice = await subscribe(s.topic("alice", "replies"))
    bob = await subscribe(s.topic("bob", "replies"))
    eui, token = next(iter(s.tokens.items()))
    await alice.command(s.topic("alice", "commands"), {
        "request_id": "claim", "command": "claim", "api_key": s.alice_key,
        "args": {"dev_eui": eui, "owner_token": token}})  # fmt: skip
    release = {"request_id": "rel-1", "command": "release", "api_key": s.alice_key, "args": {"dev_eui": eui}}
    await alice.command(s.topic("alice", "commands"), release)
    await alice.command(s.topic("alice", "commands"), release)
    await alice.wait(lambda ms: len(ms) == 3, what="claim, release and repeated release replies")
    claimed, first, repeat = (m.json for m in alice.messages)
    assert claimed["ok"] and first["ok"] and repeat["ok"], (claimed, first, repeat)
    new_token = first["result"]["owner_token"]
    assert isinstance(new_token, str) and len(new_token) == 32
    assert repeat["result"] == {**first["result"], "owner_token": None}
    assert first["result"]["device"]["state"] == "unclaimed"

    await bob.command(s.topic("bob", "commands"), {
        "request_id": "claim", "command": "claim", "api_key": s.bob_key,
        "args": {"dev_eui": eui, "owner_token": new_token}})  # fmt: skip
    (reply,) = await bob.wait(lambda ms: ms, what="bob's claim reply")
    assert reply.json["ok"] and reply.json["result"]["owner"] == "bob", "same request_id, other account: no clash"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_bad_and_foreign_commands_get_error_replies(daemon: Any, subscribe: Any, prefix: str) -> None:
    s = await _setup(daemon, subscribe, prefix, "5")
    (alices, alice_token), (bobs, bob_token), (free, _) = list(s.tokens.items())
    alice = await subscribe(s.topic("alice", "replies/#"))
    bob = await subscribe(s.topic("bob", "replies/#"))
    for key, eui, token in ((s.alice_key, alices, alice_token), (s.bob_key, bobs, bob_token)):
        account = "alice" if key == s.alice_key else "bob"
        client = alice if account == "alice" else bob
        await client.command(
            s.topic(account, "commands"),
            {"request_id": "setup", "command": "claim", "api_key": key, "args": {"dev_eui": eui, "owner_token": token}},
        )
    await alice.wait(lambda ms: len(ms) == 1)
    await bob.wait(lambda ms: len(ms) == 1)
    assert alice.messages[0].json["ok"] and bob.messages[0].json["ok"]
    ok = {"command": "set-netid", "api_key": s.alice_key, "args": {"dev_eui": alices, "net_id": "000013"}}

    cases: list[tuple[str, Any, dict[str, Any], str, str | None, str | None]] = [
        # id, payload, MQTT 5 options, problem, field, request_id echoed
        ("not json", b"claim please", {}, "invalid-request", None, None),
        ("not utf-8", b"\xff\xfe{}", {}, "invalid-request", None, None),
        ("json array", b"[1, 2]", {}, "invalid-request", None, None),
        ("no request_id", {**ok}, {}, "invalid-request", "request_id", None),
        ("request_id with space", {**ok, "request_id": "a b"}, {}, "invalid-request", "request_id", None),
        ("request_id too long", {**ok, "request_id": "x" * 65}, {}, "invalid-request", "request_id", None),
        ("unknown command", {**ok, "request_id": "r1", "command": "explode"}, {}, "invalid-request", "command", "r1"),
        ("unknown member", {**ok, "request_id": "r2", "extra": 1}, {}, "invalid-request", "extra", "r2"),
        ("args not an object", {**ok, "request_id": "r3", "args": [alices]}, {}, "invalid-request", "args", "r3"),
        ("bad dev_eui", {**ok, "request_id": "r4", "args": {"dev_eui": "12", "net_id": None}}, {}, "invalid-request",
         "args.dev_eui", "r4"),
        ("unknown arg", {**ok, "request_id": "r5", "args": {"dev_eui": alices, "net_id": None, "x": 1}}, {},
         "invalid-request", "args.x", "r5"),
        ("missing arg", {**ok, "request_id": "r6", "args": {"dev_eui": alices}}, {}, "invalid-request", "args.net_id",
         "r6"),
        ("no api key", {k: v for k, v in ok.items() if k != "api_key"} | {"request_id": "r7"}, {}, "unauthenticated",
         None, "r7"),
        ("wrong api key", {**ok, "request_id": "r8", "api_key": "jsd_000000000000_" + "A" * 43}, {},
         "unauthenticated", None, "r8"),
        ("bob's key on alice's topic", {**ok, "request_id": "r9", "api_key": s.bob_key}, {}, "forbidden", None, "r9"),
        ("bob's device", {**ok, "request_id": "r10", "args": {"dev_eui": bobs, "net_id": None}}, {}, "not-found",
         None, "r10"),
        ("unclaimed device", {**ok, "request_id": "r11", "args": {"dev_eui": free, "net_id": None}}, {},
         "not-found", None, "r11"),
        ("wrong owner token", {"request_id": "r12", "command": "claim", "api_key": s.alice_key,
                               "args": {"dev_eui": free, "owner_token": "00" * 16}}, {}, "claim-failed", None, "r12"),
        ("claim of bob's device with his spent token", {"request_id": "r13", "command": "claim",
         "api_key": s.alice_key, "args": {"dev_eui": bobs, "owner_token": bob_token}}, {}, "claim-failed", None,
         "r13"),
        ("reply_to on bob's topic", {**ok, "request_id": "r14", "reply_to": s.topic("bob", "replies")}, {},
         "invalid-request", "reply_to", "r14"),
        ("reply_to a wildcard", {**ok, "request_id": "r15", "reply_to": s.topic("alice", "replies/#")}, {},
         "invalid-request", "reply_to", "r15"),
        ("response topic on bob's topic", {**ok, "request_id": "r16"},
         {"response_topic": s.topic("bob", "replies/x")}, "invalid-request", "response_topic", None),
        ("too large", {**ok, "request_id": "r17", "pad": "x" * 20000}, {}, "payload-too-large", None, None),
    ]  # fmt: skip
    for name, payload, options, problem, field, echoed in cases:
        count = len(alice.messages)
        await alice.command(s.topic("alice", "commands"), payload, **options)
        await alice.wait(lambda ms, n=count: len(ms) > n, what=f"the reply to {name!r}")
        reply = alice.messages[-1]
        assert reply.topic == s.topic("alice", "replies"), name
        body = reply.json
        assert body["ok"] is False and body["request_id"] == echoed, (name, body)
        assert body["problem"]["type"] == f"urn:jsd:problem:{problem}", (name, body)
        assert {"type", "title", "status", "detail"} <= set(body["problem"]), name
        if field is not None:
            assert field in [e["field"] for e in body["problem"]["errors"]], (name, body)
        assert s.alice_key not in reply.payload.decode() and s.bob_key not in reply.payload.decode()

    assert len(bob.messages) == 1, "nothing of alice's reached bob's topics"
    count = len(alice.messages)
    await alice.command(s.topic("alice", "commands"), {**ok, "request_id": "after"})
    await alice.wait(lambda ms: len(ms) > count, what="a good command after the bad ones")
    assert alice.messages[-1].json["ok"] is True, "the subscriber survived every bad command"
    assert (await s.d.service.devices.get_device(s.d.operator, bytes.fromhex(bobs))).owner == "bob"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_retained_command_is_not_run_again_when_the_daemon_resubscribes(
    daemon: Any, subscribe: Any, prefix: str
) -> None:
    s = await _setup(daemon, subscribe, prefix, "5", devices=1)
    alice = await subscribe(s.topic("alice", "replies/#"))
    eui, token = next(iter(s.tokens.items()))
    claim = {"request_id": "kept", "command": "claim", "api_key": s.alice_key,
             "args": {"dev_eui": eui, "owner_token": "00" * 16}}  # fmt: skip
    await alice.client.publish(s.topic("alice", "commands"), json.dumps(claim).encode(), qos=1, retain=True)
    await alice.wait(lambda ms: len(ms) == 1, what="the live command's reply")
    try:
        await daemon.stop(s.d)
        await daemon(mqtt__host="127.0.0.1", mqtt__topic_prefix=prefix)
        fresh = {**claim, "request_id": "fresh", "args": {"dev_eui": eui, "owner_token": token}}
        watcher = await subscribe(f"{prefix}/status")
        await watcher.wait(lambda ms: any(m.payload == b"online" for m in ms), what="the new daemon online")
        await alice.command(s.topic("alice", "commands"), fresh)
        await alice.wait(lambda ms: len(ms) == 2, what="the fresh command's reply")
        assert [m.json["request_id"] for m in alice.messages] == ["kept", "fresh"], "the retained copy was skipped"
        assert alice.messages[1].json["ok"]
    finally:
        await alice.client.publish(s.topic("alice", "commands"), b"", qos=1, retain=True)


async def test_a_claim_whose_reply_was_lost_succeeds_when_retried(daemon: Any, subscribe: Any, prefix: str) -> None:
    """The change committed but the daemon died before storing the reply: the retry must not say claim-failed."""
    s = await _setup(daemon, subscribe, prefix, "5", devices=1)
    eui, token = next(iter(s.tokens.items()))
    alice = await s.d.service.accounts.authenticate(s.alice_key, "test")
    await s.d.service.claims.claim(alice, bytes.fromhex(eui), token)  # as the first attempt did, reply never stored
    replies = s.topic("alice", "replies/lost")
    client = await subscribe(replies, protocol=V5)
    command = {"request_id": "claim-lost", "command": "claim", "api_key": s.alice_key,
               "args": {"dev_eui": eui, "owner_token": token}}  # fmt: skip
    await client.command(s.topic("alice", "commands"), command, response_topic=replies)
    (reply,) = await client.wait(lambda ms: ms, what="the retried claim's reply")
    assert reply.json["ok"] is True and reply.json["result"]["owner"] == "alice", reply.json
    bob = dict(command, request_id="claim-bob", api_key=s.bob_key)
    bob_replies = s.topic("bob", "replies/x")
    bob_client = await subscribe(bob_replies, protocol=V5)
    await bob_client.command(s.topic("bob", "commands"), bob, response_topic=bob_replies)
    (refused,) = await bob_client.wait(lambda ms: ms, what="bob's reply")
    assert refused.json["ok"] is False and refused.json["problem"]["type"] == "urn:jsd:problem:claim-failed"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_strangers_failed_mqtt_claims_never_lock_the_owner_out(daemon: Any, subscribe: Any, prefix: str) -> None:
    s = await _setup(daemon, subscribe, prefix, "3.1.1", devices=1)
    window = s.d.settings.get("ownership", "claim_window")
    if (left := window - time.time() % window) < 30:  # the failure counters must not restart mid-test
        await asyncio.sleep(left + 0.1)
    ((eui, token),) = s.tokens.items()
    bob = await subscribe(s.topic("bob", "replies"), protocol=V311)
    per_device = s.d.settings.get("ownership", "claim_failures_per_device")
    for n in range(per_device + 2):
        await bob.command(s.topic("bob", "commands"), {"request_id": f"guess-{n}", "command": "claim",
                          "api_key": s.bob_key, "args": {"dev_eui": eui, "owner_token": secrets.token_hex(16)}})  # fmt: skip
    await bob.wait(lambda ms: len(ms) == per_device + 2, what="bob's replies")
    problems = [m.json["problem"] for m in bob.messages]
    assert [p["type"].rsplit(":", 1)[1] for p in problems] == ["claim-failed"] * (per_device + 1) + ["rate-limited"]
    assert problems[-1]["retry_after"] >= 1
    alice = await subscribe(s.topic("alice", "replies"), protocol=V311)
    await alice.command(s.topic("alice", "commands"), {"request_id": "mine", "command": "claim",
                        "api_key": s.alice_key, "args": {"dev_eui": eui, "owner_token": token}})  # fmt: skip
    (reply,) = await alice.wait(lambda ms: ms, what="alice's reply")
    assert reply.json["ok"] and reply.json["result"]["owner"] == "alice", reply.json
