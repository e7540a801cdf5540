"""The join use cases, table-driven, over a real SQLite file and SoftHSM2 token (fixtures in conftest.py).

Every accept is opened and checked by the simulated device and its keys unwrapped as the NS would; every
refusal is checked for its reason, its `join.rejected` event (named by the caller's `refusal_name`) and
an unchanged nonce state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from jsd.join import JoinAccepted, JoinPolicy, JoinService, Reason, Refusal
from jsd.join.nonces import MAX_JOIN_NONCE
from jsd.registry import create_engine
from jsd.registry.journal import Journal

from .conftest import HOME, JOIN_EUI, VISITED, Dev, JoinWorld, params, refusal_name

NETWORK_KEYS_10 = {"NwkSKey"}
NETWORK_KEYS_11 = {"FNwkSIntKey", "SNwkSIntKey", "NwkSEncKey"}


# -- accepts -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AcceptCase:
    device: str
    asked_as: str | None  # the MACVersion the NS sends, if not the device's own
    opt_neg: bool


ACCEPTS = {
    "1.0.0": AcceptCase("1.0.0", None, False),
    "1.0.2": AcceptCase("1.0.2", None, False),
    "1.0.3": AcceptCase("1.0.3", None, False),
    "1.0.4": AcceptCase("1.0.4", None, False),
    "1.1": AcceptCase("1.1", None, True),
    "1.1 on a 1.0.3 network": AcceptCase("1.1", "1.0.3", False),
}


@pytest.mark.parametrize("case", ACCEPTS.values(), ids=ACCEPTS.keys())
async def test_join_accepted_per_version(world: JoinWorld, case: AcceptCase) -> None:
    dev = await world.device(case.device)
    phy = dev.sim.join_request()
    outcome = await world.service().join(params(dev, phy, case.asked_as), world.home, refusal_name)
    assert isinstance(outcome, JoinAccepted), outcome
    session = dev.sim.accept(outcome.phy_payload)
    assert session.opt_neg is case.opt_neg and outcome.join_nonce == session.join_nonce == 1
    expected = {"FNwkSIntKey": session.keys.f_nwk_s_int_key, "SNwkSIntKey": session.keys.s_nwk_s_int_key,
                "NwkSEncKey": session.keys.nwk_s_enc_key, "NwkSKey": session.keys.nwk_s_key}  # fmt: skip
    assert set(outcome.network_keys) == (NETWORK_KEYS_11 if case.opt_neg else NETWORK_KEYS_10)
    for name, envelope in outcome.network_keys.items():
        assert envelope.kek_label == world.home.kek_label and world.unwrap(envelope) == expected[name]
    assert outcome.app_s_key is not None and world.unwrap(outcome.app_s_key) == session.keys.app_s_key
    state = await world.nonces(dev)
    assert (state.join_nonce, state.last_dev_nonce) == (1, dev.sim.last_dev_nonce)
    (event,) = await world.events(dev)
    assert event.type == "join.accepted" and event.data["session_key_id"] == outcome.session_key_id


async def test_join_nonce_grows_with_every_accept(world: JoinWorld) -> None:
    dev = await world.device("1.0.4")
    service = world.service()
    for expected in (1, 2, 3):
        outcome = await service.join(params(dev, dev.sim.join_request()), world.home, refusal_name)
        assert isinstance(outcome, JoinAccepted) and outcome.join_nonce == expected
        dev.sim.accept(outcome.phy_payload)


async def test_no_application_key_envelope_without_an_astk(world: JoinWorld) -> None:
    dev = await world.device("1.0.3", astk=False)
    outcome = await world.service().join(params(dev, dev.sim.join_request()), world.home, refusal_name)
    assert isinstance(outcome, JoinAccepted) and outcome.app_s_key is None


# -- refused joins -----------------------------------------------------------------------------------

Request = Callable[[JoinWorld, Dev], Awaitable[bytes]]


async def _replayed(world: JoinWorld, dev: Dev) -> bytes:
    phy = dev.sim.join_request()
    assert isinstance(await world.service().join(params(dev, phy), world.home, refusal_name), JoinAccepted)
    return phy


async def _older_counter(world: JoinWorld, dev: Dev) -> bytes:
    dev.sim.next_dev_nonce = 5
    await _replayed(world, dev)
    return dev.sim.join_request(dev_nonce=4)


async def _replayed_with_wrong_mic(world: JoinWorld, dev: Dev) -> bytes:
    phy = await _replayed(world, dev)
    return phy[:-4] + bytes(4)


async def _wrong_key(world: JoinWorld, dev: Dev) -> bytes:
    return dev.sim.join_request(root_key=bytes(16))


async def _exhausted(world: JoinWorld, dev: Dev) -> bytes:
    await world.set_join_nonce(dev, MAX_JOIN_NONCE)
    return dev.sim.join_request()


async def _fresh(world: JoinWorld, dev: Dev) -> bytes:
    return dev.sim.join_request()


@dataclass(frozen=True)
class RefusedCase:
    device: str
    request: Request
    reason: Reason
    home: bytes | None = HOME
    sender: bytes = HOME
    receiver_id: bytes | None = None
    policy: tuple[tuple[str, object], ...] = ()


REFUSED = {
    "replayed DevNonce 1.0.2": RefusedCase("1.0.2", _replayed, Reason.NONCE_REPLAYED),
    "replayed DevNonce 1.1": RefusedCase("1.1", _replayed, Reason.NONCE_REPLAYED),
    "counter going back 1.0.4": RefusedCase("1.0.4", _older_counter, Reason.NONCE_REPLAYED),
    "replay with a wrong MIC": RefusedCase("1.0.3", _replayed_with_wrong_mic, Reason.WRONG_MIC),
    "wrong MIC 1.0.3": RefusedCase("1.0.3", _wrong_key, Reason.WRONG_MIC),
    "wrong MIC 1.1": RefusedCase("1.1", _wrong_key, Reason.WRONG_MIC),
    "JoinNonce exhausted": RefusedCase("1.0.3", _exhausted, Reason.JOIN_NONCE_EXHAUSTED),
    "not the home NS": RefusedCase("1.0.3", _fresh, Reason.NOT_HOME_NETWORK, sender=VISITED),
    "no home NS": RefusedCase("1.0.3", _fresh, Reason.NOT_HOME_NETWORK, home=None),
    "ReceiverID not the JoinEUI": RefusedCase("1.0.3", _fresh, Reason.JOIN_EUI_NOT_SERVED, receiver_id=bytes(8)),
    "JoinEUI not served": RefusedCase(
        "1.0.3", _fresh, Reason.JOIN_EUI_NOT_SERVED, policy=(("join_euis", ("70b3d57ed0000002",)),)
    ),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
async def test_join_refused_recorded_and_nonces_unchanged(world: JoinWorld, case: RefusedCase) -> None:
    dev = await world.device(case.device, home=case.home)
    phy = await case.request(world, dev)
    sender = world.home if case.sender == HOME else await world.sender(case.sender)
    before, events_before = await world.nonces(dev), len(await world.events(dev))
    outcome = await world.service(**dict(case.policy)).join(
        params(dev, phy, receiver_id=case.receiver_id), sender, refusal_name
    )
    assert isinstance(outcome, Refusal) and outcome.reason is case.reason, outcome
    assert await world.nonces(dev) == before
    events = await world.events(dev)
    assert len(events) == events_before + 1
    assert events[-1].type == "join.rejected"
    assert events[-1].data == {"net_id": sender.net_id.hex(), "result": refusal_name(outcome),
                               "reason": outcome.description}  # fmt: skip


async def test_unknown_device_is_refused_and_nothing_recorded(world: JoinWorld) -> None:
    known = await world.device("1.0.3")
    stranger = Dev(type(known.sim)(bytes(8), JOIN_EUI, "1.0.3", bytes(16)), None)
    outcome = await world.service().join(params(stranger, stranger.sim.join_request()), world.home, refusal_name)
    assert isinstance(outcome, Refusal) and outcome.reason is Reason.UNKNOWN_DEVICE
    assert await world.events(stranger) == []


async def test_malformed_frame_is_refused(world: JoinWorld) -> None:
    dev = await world.device("1.0.3")
    outcome = await world.service().join(params(dev, b"\x00\x01"), world.home, refusal_name)
    assert isinstance(outcome, Refusal) and outcome.reason is Reason.MALFORMED
    other = await world.device("1.0.3")
    mismatch = await world.service().join(params(dev, other.sim.join_request()), world.home, refusal_name)
    assert isinstance(mismatch, Refusal) and mismatch.reason is Reason.MALFORMED


# -- rejoins -----------------------------------------------------------------------------------------


async def _joined(world: JoinWorld) -> Dev:
    dev = await world.device("1.1")
    outcome = await world.service().join(params(dev, dev.sim.join_request()), world.home, refusal_name)
    assert isinstance(outcome, JoinAccepted)
    dev.sim.accept(outcome.phy_payload)
    return dev


@pytest.mark.parametrize("rejoin_type", [0, 1, 2])
async def test_rejoin_accepted_per_type(world: JoinWorld, rejoin_type: int) -> None:
    dev = await _joined(world)
    phy = dev.sim.rejoin_request(rejoin_type)
    outcome = await world.service().rejoin(params(dev, phy), world.home, refusal_name)
    assert isinstance(outcome, JoinAccepted), outcome
    session = dev.sim.accept(outcome.phy_payload)
    assert session.opt_neg and outcome.join_nonce == 2
    assert world.unwrap(outcome.network_keys["SNwkSIntKey"]) == session.keys.s_nwk_s_int_key
    state = await world.nonces(dev)
    assert state.join_nonce == 2
    assert (state.rj_count1 if rejoin_type == 1 else state.rj_count0) == 0
    assert (await world.events(dev))[-1].data["rejoin_type"] == rejoin_type


async def test_rejoin_type_1_replay_is_refused(world: JoinWorld) -> None:
    dev = await _joined(world)
    phy = dev.sim.rejoin_request(1)
    service = world.service()
    accepted = await service.rejoin(params(dev, phy), world.home, refusal_name)
    assert isinstance(accepted, JoinAccepted)
    before = await world.nonces(dev)
    outcome = await service.rejoin(params(dev, phy), world.home, refusal_name)
    assert isinstance(outcome, Refusal) and outcome.reason is Reason.NONCE_REPLAYED
    assert await world.nonces(dev) == before
    assert (await world.events(dev))[-1].data["result"] == refusal_name(outcome)


async def test_rejoin_type_1_wrong_mic_and_1_0_device_are_refused(world: JoinWorld) -> None:
    dev = await _joined(world)
    phy = dev.sim.rejoin_request(1)
    outcome = await world.service().rejoin(params(dev, phy[:-4] + bytes(4)), world.home, refusal_name)
    assert isinstance(outcome, Refusal) and outcome.reason is Reason.WRONG_MIC
    old = await world.device("1.0.3")
    outcome = await world.service().rejoin(params(old, phy, dev_eui=old.sim.dev_eui), world.home, refusal_name)
    assert isinstance(outcome, Refusal) and outcome.reason is Reason.MALFORMED


# -- HomeNSReq and AppSKeyReq ------------------------------------------------------------------------


@dataclass(frozen=True)
class HomeCase:
    home: bytes | None
    asker: bytes
    agreement: bool
    requires_agreement: bool
    answer: bytes | Reason


HOME_CASES = {
    "the home NS": HomeCase(HOME, HOME, False, True, HOME),
    "a visited NS with an agreement": HomeCase(HOME, VISITED, True, True, HOME),
    "a visited NS without one": HomeCase(HOME, VISITED, False, True, Reason.UNKNOWN_DEVICE),
    "anyone when no agreement is required": HomeCase(HOME, VISITED, False, False, HOME),
    "a device without a home": HomeCase(None, HOME, False, True, Reason.NOT_HOME_NETWORK),
}


@pytest.mark.parametrize("case", HOME_CASES.values(), ids=HOME_CASES.keys())
async def test_home_net_id(world: JoinWorld, case: HomeCase) -> None:
    dev = await world.device("1.0.3", home=case.home)
    if case.agreement:
        await world.allow_roaming(HOME, case.asker)
    service = world.service(home_ns_requires_agreement=case.requires_agreement)
    answer = await service.home_net_id(dev.sim.dev_eui, await world.sender(case.asker))
    if isinstance(case.answer, Reason):
        assert isinstance(answer, Refusal) and answer.reason is case.answer
    else:
        assert answer == case.answer
    unknown = await service.home_net_id(bytes(8), world.home)
    assert isinstance(unknown, Refusal) and unknown.reason is Reason.UNKNOWN_DEVICE


async def test_app_s_key_of_a_past_session(world: JoinWorld) -> None:
    dev = await world.device("1.1")
    service = world.service()
    accepted = await service.join(params(dev, dev.sim.join_request()), world.home, refusal_name)
    assert isinstance(accepted, JoinAccepted)
    session = dev.sim.accept(accepted.phy_payload)
    envelope = await service.app_s_key(dev.sim.dev_eui, accepted.session_key_id, world.home)
    assert not isinstance(envelope, Refusal)
    assert world.unwrap(envelope) == session.keys.app_s_key
    assert (await world.events(dev))[-1].data == {"net_id": HOME.hex(), "session_key_id": accepted.session_key_id}


@pytest.mark.parametrize(
    ("astk", "known_session", "reason"),
    [(True, False, Reason.UNKNOWN_DEVICE), (False, True, Reason.NO_APPLICATION_KEY)],
    ids=["unknown session", "no ASTK"],
)
async def test_app_s_key_refused(world: JoinWorld, astk: bool, known_session: bool, reason: Reason) -> None:
    dev = await world.device("1.0.3", astk=astk)
    service = world.service()
    accepted = await service.join(params(dev, dev.sim.join_request()), world.home, refusal_name)
    assert isinstance(accepted, JoinAccepted)
    session_key_id = accepted.session_key_id if known_session else "00" * 16
    outcome = await service.app_s_key(dev.sim.dev_eui, session_key_id, world.home)
    assert isinstance(outcome, Refusal) and outcome.reason is reason


async def test_refusal_stands_when_its_record_cannot_be_written(
    world: JoinWorld, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal that cannot take the event (here: a database without the tables) loses only the record."""
    dev = await world.device("1.0.3")
    broken = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        service = JoinService(world.registry, world.hsm, JoinPolicy(), Journal(broken))
        before = await world.nonces(dev)
        outcome = await service.join(params(dev, dev.sim.join_request(root_key=bytes(16))), world.home, refusal_name)
    finally:
        await broken.dispose()
    assert isinstance(outcome, Refusal) and outcome.reason is Reason.WRONG_MIC
    assert await world.nonces(dev) == before and await world.events(dev) == []
    assert f"refused join of {dev.sim.dev_eui.hex()}" in caplog.text
