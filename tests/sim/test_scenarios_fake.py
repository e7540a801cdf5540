"""The simulator's network side and scenario runner against the in-process fake Join Server.

These check the simulator itself (LBI JSON, unwrapping, async mode, deviation detection); the daemon is
checked by test_scenarios_daemon.py with the same scenarios.
"""

from __future__ import annotations

from typing import Any

import pytest

from jsd_sim.network_server import JoinServerDeviation, SimNetworkServer
from jsd_sim.scenarios import Step, provision, standard_steps


@pytest.mark.parametrize("async_answers", [False, True], ids=["sync", "async"])
async def test_standard_scenario_passes(fake_js: Any, sim_conformance: Any, async_answers: bool) -> None:
    report = await sim_conformance(fake_js, async_answers=async_answers)
    assert report.ok, report.to_text()
    kinds = {r.kind.split("(")[0] for r in report.results}
    assert kinds == {"join", "replay", "wrong_key", "wrong_net_id", "rejoin", "home_ns", "app_s_key"}
    rejoin_devices = {r.dev_eui for r in report.results if r.kind.startswith("rejoin")}
    assert len(rejoin_devices) == 1


async def test_wrong_expectation_fails_the_run(fake_js: Any, sim_conformance: Any) -> None:
    report = await sim_conformance(fake_js, steps=[Step("join"), Step("replay", expect=("Success",))],
                                   versions=("1.0.2",))
    assert not report.ok
    assert report.failures[0].got == "JoinReqFailed"
    assert "FAIL step 2" in report.to_text()


async def test_first_counter_join_uses_dev_nonce_zero(fake_js: Any, sim_conformance: Any) -> None:
    report = await sim_conformance(fake_js, steps=[Step("join")], versions=("1.0.4", "1.1"), with_visited=False)
    assert report.ok, report.to_text()


async def test_tampered_accept_is_a_deviation(fake_js: Any) -> None:
    scenario, nss = await provision(fake_js, versions=("1.0.3",), with_visited=False)
    original = fake_js._accept

    def tampered(*args: Any) -> dict[str, Any]:
        out: dict[str, Any] = original(*args)
        phy = bytearray.fromhex(out["PHYPayload"])
        phy[5] ^= 0x01
        out["PHYPayload"] = phy.hex()
        return out

    fake_js._accept = tampered
    try:
        with pytest.raises(JoinServerDeviation) as err:
            await nss["home"].join(scenario.devices[0])
        assert err.value.check == "accept"
    finally:
        for ns in nss.values():
            await ns.close()


async def test_unknown_kek_label_is_a_deviation(fake_js: Any) -> None:
    scenario, nss = await provision(fake_js, versions=("1.1",), with_visited=False)
    nss["home"].keks.clear()
    try:
        with pytest.raises(JoinServerDeviation) as err:
            await nss["home"].join(scenario.devices[0])
        assert err.value.check == "kek-label"
    finally:
        for ns in nss.values():
            await ns.close()


async def test_join_outcome_carries_agreed_keys(fake_js: Any) -> None:
    scenario, nss = await provision(fake_js, versions=("1.1",), with_visited=False)
    try:
        dev = scenario.devices[0]
        out = await nss["home"].join(dev)
        assert out.ok and out.device_session is not None and out.network_keys is not None
        assert out.device_session.opt_neg
        assert out.network_keys.s_nwk_s_int_key == out.device_session.keys.s_nwk_s_int_key
        assert out.app_s_key_checked
        assert out.request["MACVersion"] == "1.1.0" and out.request["DLSettings"] == "80"
        assert set(out.request) == {"ProtocolVersion", "SenderID", "ReceiverID", "TransactionID", "MessageType",
                                    "MACVersion", "PHYPayload", "DevEUI", "DevAddr", "DLSettings", "RxDelay"}
    finally:
        for ns in nss.values():
            await ns.close()


async def test_transport_error_when_nobody_listens(sim_device_factory: Any) -> None:
    from jsd_sim.network_server import TransportError

    async with SimNetworkServer("http://127.0.0.1:9/lbi", "000013", http_timeout=2) as ns:
        with pytest.raises(TransportError):
            await ns.join(sim_device_factory("1.0.3"))


def test_standard_steps_cover_every_kind() -> None:
    assert {s.kind for s in standard_steps()} == {
        "join", "replay", "wrong_key", "wrong_net_id", "rejoin", "home_ns", "app_s_key"}


async def test_async_answer_arrives_on_the_listener(fake_js: Any) -> None:
    scenario, nss = await provision(fake_js, versions=("1.0.3",), with_visited=False, async_answers=True)
    try:
        out = await nss["home"].join(scenario.devices[0])
        assert out.ok and out.answer.asynchronous
        assert not nss["home"].unexpected_answers
    finally:
        for ns in nss.values():
            await ns.close()
