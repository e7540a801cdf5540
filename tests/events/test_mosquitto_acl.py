"""conf/mosquitto/ as shipped: Mosquitto with our config and ACL confines each account to its own topics.

Only the listener port, the password file and the persistence directory are changed for the test; the ACL
file is used as it is. The daemon logs in as ``_jsd`` and the accounts as themselves; an account sees none of
another's events, commands or replies, cannot command for it, and cannot forge events even on its own topics.
No account client reads a command topic, not its own either: commands carry the account's API key.
An event topic the ACL denies the daemon is refused in its PUBACK (MQTT 5): the event stays in the outbox.
"""

from __future__ import annotations

import getpass
import logging
import secrets
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from jsd.events.topics import Topics

CONF = Path(__file__).resolve().parents[2] / "conf" / "mosquitto"
JOIN_EUI = "70b3d57ed0000001"
PASSWORDS = {"_jsd": secrets.token_urlsafe(12), "alice": secrets.token_urlsafe(12), "bob": secrets.token_urlsafe(12),
             "_monitor": secrets.token_urlsafe(12)}  # fmt: skip


def _claim(request_id: str, key: str, eui: str, token: str | None) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "command": "claim",
        "api_key": key,
        "args": {"dev_eui": eui, "owner_token": token},
    }


@pytest.fixture
def shipped_broker(tmp_path: Path, mosquitto: Any) -> Any:
    """The test broker restarted with the shipped mosquitto.conf and jsd.acl."""
    mosquitto.stop()
    passwd = tmp_path / "jsd.passwd"
    for index, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwd), user, password], check=True)
    conf = (CONF / "mosquitto.conf").read_text()
    replaced = {
        "password_file /etc/mosquitto/jsd.passwd": f"password_file {passwd}",
        "acl_file /etc/mosquitto/jsd.acl": f"acl_file {CONF / 'jsd.acl'}",
        "listener 1883 127.0.0.1": f"listener {mosquitto.port} 127.0.0.1",
        "persistence_location /var/lib/mosquitto/": f"persistence_location {mosquitto.directory}/",
    }
    for old, new in replaced.items():
        assert old in conf, f"conf/mosquitto/mosquitto.conf no longer has {old!r}"
        conf = conf.replace(old, new)
    mosquitto.conf = mosquitto.directory / "shipped.conf"
    mosquitto.conf.write_text(conf + f"user {getpass.getuser()}\n")
    mosquitto.start()
    return mosquitto


async def test_each_account_is_confined_to_its_own_topics(
    shipped_broker: Any, daemon: Any, subscribe: Any, tmp_path: Path
) -> None:
    port = shipped_broker.port
    with pytest.raises(aiomqtt.MqttError):
        await subscribe("jsd/v1/#", port=port)
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORDS["_jsd"] + "\n")
    d = await daemon(mqtt__host="127.0.0.1", mqtt__port=port, mqtt__username="_jsd", mqtt__password_file=str(secret))
    topics = Topics("jsd/v1")
    alice_eyes = await subscribe("jsd/v1/#", "jsd/v1/accounts/bob/#", "jsd/v1/accounts/+/commands", port=port,
                                 username="alice", password=PASSWORDS["alice"])  # fmt: skip
    alice = await subscribe(port=port, username="alice", password=PASSWORDS["alice"])
    bob = await subscribe("jsd/v1/accounts/bob/#", port=port, username="bob", password=PASSWORDS["bob"])
    monitor = await subscribe("jsd/v1/accounts/+/devices/+/events/+", "jsd/v1/status", port=port,
                              username="_monitor", password=PASSWORDS["_monitor"])  # fmt: skip
    await monitor.wait(lambda ms: any(m.topic == topics.status and m.payload == b"online" for m in ms))

    maker, _ = await d.account("maker", "manufacturer")
    _, alice_key = await d.account("alice", "subscriber")
    _, bob_key = await d.account("bob", "subscriber")
    devices = {}
    for owner in ("alice", "bob"):
        eui = secrets.token_hex(8)
        imported = await d.service.devices.add_device(
            maker, {"dev_eui": eui, "join_eui": JOIN_EUI, "mac_version": "1.0.4", "generate_keys": True}
        )
        devices[owner] = (eui, imported.owner_token)
    bob_eui, bob_token = devices["bob"]
    await bob.command(topics.commands("bob"), _claim("b1", bob_key, bob_eui, bob_token))
    await bob.wait(lambda ms: any(m.topic == topics.replies("bob") for m in ms), what="bob's reply")

    forged = topics.event("alice", devices["alice"][0], "device.claimed")
    await alice.client.publish(forged, b'{"forged": true}', qos=1)
    alice_eui, alice_token = devices["alice"]
    await alice.command(topics.commands("bob"), _claim("a0", alice_key, alice_eui, alice_token))
    await alice.command(topics.commands("alice"), _claim("a1", alice_key, alice_eui, alice_token))
    await alice_eyes.wait(
        lambda ms: (
            any(m.topic == topics.replies("alice") for m in ms)
            and any(m.topic == topics.event("alice", alice_eui, "device.claimed") for m in ms)
        ),
        what="alice's reply and claim event",
    )
    await monitor.wait(lambda ms: {topics.event(o, devices[o][0], "device.claimed") for o in devices}
                       <= {m.topic for m in ms}, what="both claims at the monitor")  # fmt: skip

    seen = [m for m in alice_eyes.messages if m.topic != topics.status]
    assert all(m.topic.startswith("jsd/v1/accounts/alice/") for m in seen), [m.topic for m in seen]
    assert not any(bob_key in m.payload.decode() or bob_eui in m.payload.decode() for m in alice_eyes.messages)
    assert b'"forged"' not in b"".join(m.payload for m in alice_eyes.messages + monitor.messages)
    replies = [m.json for m in alice_eyes.messages if m.topic == topics.replies("alice")]
    assert [r["request_id"] for r in replies] == ["a1"] and replies[0]["ok"], "a0 never reached the daemon"
    assert all(m.json.get("request_id") != "a0" for m in bob.messages if m.topic.startswith(topics.replies("bob")))
    # Commands carry the account's API key: no client of the account reads them, not even its own topic.
    assert not any(m.topic.endswith("/commands") for m in alice_eyes.messages + bob.messages)
    assert not any(alice_key in m.payload.decode() for m in alice_eyes.messages)
    assert not any(bob_key in m.payload.decode() or bob_token in m.payload.decode() for m in bob.messages)


async def test_command_topics_are_write_only_for_accounts(shipped_broker: Any, daemon: Any, subscribe: Any,
                                                          tmp_path: Path) -> None:  # fmt: skip
    port = shipped_broker.port
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORDS["_jsd"] + "\n")
    d = await daemon(mqtt__host="127.0.0.1", mqtt__port=port, mqtt__username="_jsd", mqtt__password_file=str(secret))
    topics = Topics("jsd/v1")
    maker, _ = await d.account("maker", "manufacturer")
    _, alice_key = await d.account("alice", "subscriber")
    await d.account("bob", "subscriber")
    listener = await subscribe(topics.commands("alice"), port=port, username="alice", password=PASSWORDS["alice"])
    events = await subscribe("jsd/v1/accounts/alice/#", port=port, username="alice", password=PASSWORDS["alice"])
    bob = await subscribe("jsd/v1/accounts/+/replies/#", "jsd/v1/accounts/+/replies", port=port,
                          username="bob", password=PASSWORDS["bob"])  # fmt: skip
    sender = await subscribe(port=port, username="alice", password=PASSWORDS["alice"])
    eui = secrets.token_hex(8)
    token = (await d.service.devices.add_device(
        maker, {"dev_eui": eui, "join_eui": JOIN_EUI, "mac_version": "1.0.4", "generate_keys": True}
    )).owner_token  # fmt: skip
    assert token
    stolen = {**_claim("steal", alice_key, eui, token), "reply_to": topics.replies("bob") + "/x"}
    await sender.command(topics.commands("alice"), stolen)
    await sender.command(topics.commands("alice"), {**_claim("c1", alice_key, eui, token),
                                                    "reply_to": topics.replies("alice") + "/app"})  # fmt: skip
    await events.wait(
        lambda ms: (
            any(m.topic == topics.replies("alice") + "/app" and m.json.get("ok") for m in ms)
            and any(m.topic == topics.event("alice", eui, "device.claimed") for m in ms)
            and any(m.topic == topics.replies("alice") and m.json.get("request_id") == "steal" for m in ms)
        ),
        what="alice's reply, the refusal of a reply_to into bob's topics, and her claim event",
    )
    assert listener.messages == [] and not any(m.topic.endswith("/commands") for m in events.messages)
    refused = next(m.json for m in events.messages if m.json.get("request_id") == "steal")
    assert not refused["ok"] and refused["problem"]["type"] == "urn:jsd:problem:invalid-request"
    assert not any(alice_key in m.payload.decode() or token in m.payload.decode() for m in events.messages)
    assert bob.messages == [], [m.topic for m in bob.messages]


async def test_a_puback_refusal_keeps_the_event_in_the_outbox(
    shipped_broker: Any, daemon: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORDS["_jsd"])
    d = await daemon(mqtt__host="127.0.0.1", mqtt__port=shipped_broker.port, mqtt__username="_jsd",
                     mqtt__password_file=str(secret), mqtt__topic_prefix="elsewhere/v1", mqtt__retry_min=0.05,
                     mqtt__retry_max=0.1)  # fmt: skip
    maker, _ = await d.account("maker", "manufacturer")
    caplog.set_level(logging.WARNING, "jsd.events")
    await d.service.devices.add_device(maker, {"dev_eui": secrets.token_hex(8), "join_eui": JOIN_EUI,
                                       "mac_version": "1.0.4", "generate_keys": True})  # fmt: skip
    pending = await d.store.pending_events(10)
    assert len(pending) == 2

    def refusals() -> int:
        return sum("broker refused" in r.getMessage() for r in caplog.records)

    await d.until(lambda: refusals() >= 2, what="the publisher retrying after refused PUBACKs")
    assert [e.event_id for e in await d.store.pending_events(10)] == [e.event_id for e in pending]
    assert "not authorized" in caplog.text.lower()
