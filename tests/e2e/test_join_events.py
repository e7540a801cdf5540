"""Joins leave events: accepted and rejoin-accepted with the nonce commit, refusals and AppSKeyReqs on their own.

Also the roaming rule of HomeNSReq when `lbi.home_ns_requires_agreement` is on.
"""

from __future__ import annotations

from typing import Any

from jsd.app import STORES, join_policy
from jsd.join import JoinService, Reason, Refusal

from .test_lbi_joins import HOME, JOIN_EUI, VISITED, _dev, _net, check_success, join_req, post


async def _events(server: Any, dev_eui: str) -> list[Any]:
    return await server.app[STORES].journal.events(account=None, after=None, limit=100, dev_eui=dev_eui)


async def test_join_events_carry_the_outcome_and_no_keys(jsd_server: Any) -> None:
    net = await _net(jsd_server, HOME)
    dev = await _dev(jsd_server, "1.1")
    request = join_req(dev, net, dev.sim.join_request())
    _, answer = await post(jsd_server.url, request, net.token)
    check_success(answer, dev, net, request)
    bad = join_req(dev, net, dev.sim.join_request()[:-4] + b"\0\0\0\0")
    _, refused = await post(jsd_server.url, bad, net.token)
    assert refused["Result"]["ResultCode"] == "MICFailed"
    key_req = {
        "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 3,
        "MessageType": "AppSKeyReq", "DevEUI": dev.dev_eui, "SessionKeyID": answer["SessionKeyID"],
    }  # fmt: skip
    _, key_answer = await post(jsd_server.url, key_req, net.token)
    assert key_answer["Result"]["ResultCode"] == "Success"

    found = await _events(jsd_server, dev.dev_eui)
    assert [e.type for e in found] == ["join.accepted", "join.rejected", "appskey.answered"]
    accepted, rejected, answered = (e.data for e in found)
    assert accepted == {
        "net_id": HOME,
        "mac_version": "1.1",
        "dev_nonce": request_dev_nonce(request),
        "join_nonce": 1,
        "session_key_id": answer["SessionKeyID"],
    }
    assert rejected["result"] == "MICFailed" and rejected["net_id"] == HOME and rejected["reason"]
    assert answered == {"net_id": HOME, "session_key_id": answer["SessionKeyID"]}
    assert {e.account for e in found} == {"_unowned"}
    pending = {e.event_id for e in await jsd_server.app[STORES].journal.pending_events(100)}
    assert {e.event_id for e in found} <= pending
    text = repr(found).lower()
    for envelope in ("NwkSEncKey", "AppSKey"):
        assert answer[envelope]["AESKey"].lower() not in text


def request_dev_nonce(request: dict[str, Any]) -> int:
    phy = bytes.fromhex(request["PHYPayload"])
    return int.from_bytes(phy[17:19], "little")


async def test_rejoin_event_is_written_with_the_state(jsd_server: Any) -> None:
    net = await _net(jsd_server, HOME)
    dev = await _dev(jsd_server, "1.1")
    first = join_req(dev, net, dev.sim.join_request())
    check_success((await post(jsd_server.url, first, net.token))[1], dev, net, first)
    request = join_req(dev, net, dev.sim.rejoin_request(0), MessageType="RejoinReq")
    _, rejoin = await post(jsd_server.url, request, net.token)
    check_success(rejoin, dev, net, request)
    last = (await _events(jsd_server, dev.dev_eui))[-1]
    assert last.type == "rejoin.accepted" and last.data["rejoin_type"] == 0 and last.data["join_nonce"] == 2


async def test_home_ns_req_needs_a_roaming_agreement_when_configured(jsd_server: Any) -> None:
    await _net(jsd_server, HOME)
    visited = await _net(jsd_server, VISITED)
    other = await _net(jsd_server, "00003b")
    dev = await _dev(jsd_server, "1.0.3")
    policy = join_policy(jsd_server.settings.replace(lbi__home_ns_requires_agreement=True))
    stores = jsd_server.app[STORES]
    service = JoinService(jsd_server.registry, jsd_server.hsm, policy, stores.journal, stores.roaming)
    await stores.roaming.add_roaming(HOME, VISITED, _audit())
    assert await service.home_net_id(dev.sim.dev_eui, await service.sender_for_token(visited.token)) == bytes.fromhex(
        HOME
    )
    stranger = await service.sender_for_token(other.token)
    refused = await service.home_net_id(dev.sim.dev_eui, stranger)
    assert isinstance(refused, Refusal), "an NS without an agreement learned the home NetID"
    assert refused.reason is Reason.UNKNOWN_DEVICE


def _audit() -> Any:
    from jsd.registry.journal import AuditRecord

    return AuditRecord(account=None, key_id=None, source="test", action="roaming.added")
