"""Every scenario kind of the simulator against the running daemon (``jsd_server``: SQLite and PostgreSQL).

The simulator does its own device and network crypto with ``cryptography`` and never imports ``jsd``, so a
pass here is an independent check of the daemon's join handling, key derivation and key wrapping.
"""

from __future__ import annotations

from typing import Any

import pytest

from jsd_sim.scenarios import Step, provision

ALL_VERSIONS = ("1.0.2", "1.0.3", "1.0.4", "1.1")


def _assert_ok(report: Any) -> None:
    assert report.ok, report.to_text()
    assert report.results, "no step ran"


@pytest.mark.parametrize("version", ALL_VERSIONS)
async def test_join(jsd_server: Any, sim_conformance: Any, version: str) -> None:
    report = await sim_conformance(jsd_server, versions=(version,), with_visited=False,
                                   steps=[Step("join"), Step("join"), Step("join")])
    _assert_ok(report)


async def test_replayed_dev_nonce_is_join_req_failed(jsd_server: Any, sim_conformance: Any) -> None:
    report = await sim_conformance(jsd_server, versions=ALL_VERSIONS, with_visited=False,
                                   steps=[Step("join"), Step("replay"), Step("join")])
    _assert_ok(report)
    assert {r.got for r in report.results if r.kind == "replay"} == {"JoinReqFailed"}


async def test_wrong_key_is_mic_failed_and_leaves_no_dev_nonce(jsd_server: Any, sim_conformance: Any) -> None:
    report = await sim_conformance(jsd_server, versions=ALL_VERSIONS, with_visited=False,
                                   steps=[Step("join"), Step("wrong_key"), Step("join")])
    _assert_ok(report)


async def test_spoofed_sender_id_is_unknown_sender(jsd_server: Any, sim_conformance: Any) -> None:
    report = await sim_conformance(jsd_server, versions=ALL_VERSIONS, with_visited=False,
                                   steps=[Step("wrong_net_id"), Step("join")])
    _assert_ok(report)
    assert {r.got for r in report.results if r.kind.startswith("wrong_net_id")} == {"UnknownSender"}


async def test_foreign_network_is_activation_disallowed(jsd_server: Any, sim_conformance: Any) -> None:
    report = await sim_conformance(jsd_server, versions=ALL_VERSIONS,
                                   steps=[Step("wrong_net_id", ns="visited"), Step("join")])
    _assert_ok(report)
    assert {r.got for r in report.results if r.kind.startswith("wrong_net_id")} == {"ActivationDisallowed"}


async def test_lorawan_11_device_on_10_network(jsd_server: Any, sim_conformance: Any) -> None:
    report = await sim_conformance(jsd_server, versions=("1.1",), with_visited=False,
                                   steps=[Step("join", mac_version="1.0.3"), Step("join", mac_version="1.0.3"),
                                          Step("join")])
    _assert_ok(report)


@pytest.mark.parametrize("rejoin_type", [0, 1, 2])
async def test_rejoin(jsd_server: Any, sim_conformance: Any, rejoin_type: int) -> None:
    report = await sim_conformance(jsd_server, versions=("1.1",), with_visited=False,
                                   steps=[Step("join"), Step("rejoin", rejoin_type=rejoin_type),
                                          Step("rejoin", rejoin_type=rejoin_type), Step("app_s_key")])
    _assert_ok(report)


async def test_home_ns_from_visited_network(jsd_server: Any, sim_conformance: Any) -> None:
    report = await sim_conformance(jsd_server, versions=ALL_VERSIONS, steps=[Step("home_ns", ns="visited")])
    _assert_ok(report)


async def test_app_s_key_by_session_key_id(jsd_server: Any, sim_conformance: Any) -> None:
    report = await sim_conformance(jsd_server, versions=ALL_VERSIONS, with_visited=False,
                                   steps=[Step("join"), Step("app_s_key"), Step("join"), Step("app_s_key")])
    _assert_ok(report)


async def test_every_kind_in_one_scenario(jsd_server: Any, sim_conformance: Any) -> None:
    report = await sim_conformance(jsd_server, devices_per_version=2)
    _assert_ok(report)


async def test_async_answers(jsd_server: Any, sim_conformance: Any) -> None:
    report = await sim_conformance(jsd_server, versions=("1.0.3", "1.1"), with_visited=False, async_answers=True,
                                   steps=[Step("join"), Step("replay"), Step("rejoin", rejoin_type=1)])
    _assert_ok(report)


async def test_async_answer_arrives_on_the_listener(jsd_server: Any) -> None:
    scenario, nss = await provision(jsd_server, versions=("1.0.3", "1.1"), with_visited=False, async_answers=True)
    try:
        for dev in scenario.devices:
            out = await nss["home"].join(dev)
            assert out.ok and out.answer.asynchronous and out.app_s_key_checked
    finally:
        for ns in nss.values():
            await ns.close()
