"""DevNonce, JoinNonce and RJcount rules of the simulated device, per LoRaWAN version."""

from __future__ import annotations

import random

import pytest

from jsd_sim.crypto import aes_ecb_decrypt
from jsd_sim.device import (
    AcceptError,
    DevNonceExhausted,
    SimDevice,
    derive_js_enc_key,
    derive_js_int_key,
    join_accept_mic_legacy,
    join_accept_mic_optneg,
)

JOIN_EUI = bytes.fromhex("70b3d57ed0000001")
NET_ID = bytes.fromhex("000013")
DEV_ADDR = bytes.fromhex("26011bda")


def device(version: str, *, rng: random.Random | None = None, next_dev_nonce: int = 0) -> SimDevice:
    nwk = bytes([0x22] * 16) if version == "1.1" else None
    return SimDevice(bytes.fromhex("0102030405060708"), JOIN_EUI, version, bytes([0x11] * 16), nwk,
                     rng=rng, next_dev_nonce=next_dev_nonce)


def accept_for(dev: SimDevice, join_nonce: int, *, opt_neg: bool = False, req_type: int = 0xFF,
               nonce: int | None = None, tamper: bool = False) -> bytes:
    """A join-accept built the Join Server's way (AES decrypt), for the device under test."""
    dl = 0x80 if opt_neg else 0x00
    body = join_nonce.to_bytes(3, "little") + NET_ID[::-1] + DEV_ADDR[::-1] + bytes([dl, 1])
    if opt_neg:
        assert dev.nwk_key is not None
        n = dev.last_dev_nonce if nonce is None else nonce
        assert n is not None
        mic = join_accept_mic_optneg(derive_js_int_key(dev.nwk_key, dev.dev_eui), req_type, JOIN_EUI, n, 0x20, body)
    else:
        mic = join_accept_mic_legacy(dev.root_key, 0x20, body)
    if tamper:
        mic = bytes([mic[0] ^ 1]) + mic[1:]
    enc = derive_js_enc_key(dev.nwk_key, dev.dev_eui) if req_type != 0xFF and dev.nwk_key else dev.root_key
    return b"\x20" + aes_ecb_decrypt(enc, body + mic)


@pytest.mark.parametrize("version", ["1.0.0", "1.0.1", "1.0.2", "1.0.3"])
def test_random_dev_nonces_never_repeat(version: str) -> None:
    dev = device(version, rng=random.Random(7))
    nonces = [dev.take_dev_nonce() for _ in range(5000)]
    assert len(set(nonces)) == 5000
    assert nonces[:5] != [0, 1, 2, 3, 4]
    assert all(0 <= n <= 0xFFFF for n in nonces)


def test_random_dev_nonces_run_out() -> None:
    dev = device("1.0.3")
    dev.used_dev_nonces = set(range(0x10000)) - {4242}
    assert dev.take_dev_nonce() == 4242
    with pytest.raises(DevNonceExhausted):
        dev.take_dev_nonce()


@pytest.mark.parametrize("version", ["1.0.4", "1.1"])
def test_counter_dev_nonces_from_zero_and_exhaust(version: str) -> None:
    dev = device(version)
    assert [dev.take_dev_nonce() for _ in range(3)] == [0, 1, 2]
    dev.next_dev_nonce = 0xFFFF
    assert dev.take_dev_nonce() == 0xFFFF
    with pytest.raises(DevNonceExhausted):
        dev.take_dev_nonce()


@pytest.mark.parametrize("version", ["1.0.2", "1.0.4", "1.1"])
def test_reserved_nonce_is_reused_by_the_next_request(version: str) -> None:
    dev = device(version)
    reserved = dev.take_dev_nonce(commit=False)
    assert reserved not in dev.used_dev_nonces
    frame = dev.join_request()
    assert int.from_bytes(frame[17:19], "little") == reserved
    assert int.from_bytes(dev.join_request()[17:19], "little") != reserved


@pytest.mark.parametrize("version", ["1.0.2", "1.0.4"])
def test_replay_leaves_nonce_state_alone(version: str) -> None:
    dev = device(version)
    first = dev.join_request()
    state = dev.state()
    replay = dev.join_request(dev_nonce=int.from_bytes(first[17:19], "little"))
    assert replay == first and dev.state() == state


def test_join_nonce_must_grow_from_104() -> None:
    dev = device("1.0.4")
    dev.join_request()
    assert dev.accept(accept_for(dev, 5)).join_nonce == 5
    dev.join_request()
    with pytest.raises(AcceptError, match="JoinNonce 5 not greater"):
        dev.accept(accept_for(dev, 5))


def test_join_nonce_not_checked_before_104() -> None:
    dev = device("1.0.2")
    dev.join_request()
    dev.accept(accept_for(dev, 5))
    dev.join_request()
    assert dev.accept(accept_for(dev, 3)).join_nonce == 3


def test_join_nonce_must_grow_for_11_optneg() -> None:
    dev = device("1.1")
    dev.join_request()
    assert dev.accept(accept_for(dev, 9, opt_neg=True)).opt_neg
    dev.join_request()
    with pytest.raises(AcceptError):
        dev.accept(accept_for(dev, 9, opt_neg=True))


def test_bad_mic_and_stray_accepts_are_rejected() -> None:
    dev = device("1.0.3")
    with pytest.raises(AcceptError, match="no join"):
        dev.accept(accept_for(dev, 1))
    dev.join_request()
    with pytest.raises(AcceptError, match="MIC"):
        dev.accept(accept_for(dev, 1, tamper=True))
    with pytest.raises(AcceptError, match="17 or 33"):
        dev.accept(b"\x20" + bytes(10))


def test_11_device_on_10_network_uses_nwk_key_in_10_layout() -> None:
    dev = device("1.1")
    dev.join_request()
    s = dev.accept(accept_for(dev, 1, opt_neg=False))
    assert not s.opt_neg
    assert s.keys.f_nwk_s_int_key == s.keys.s_nwk_s_int_key == s.keys.nwk_s_enc_key
    with pytest.raises(ValueError, match="OptNeg"):
        dev.rejoin_request(0)


def test_rejoin_counters() -> None:
    dev = device("1.1")
    dev.join_request()
    dev.accept(accept_for(dev, 1, opt_neg=True))
    assert dev.rejoin_request(0)[-6:-4] == b"\x00\x00"
    assert dev.rejoin_request(2)[-6:-4] == b"\x01\x00"
    assert dev.rj_count0 == 2
    assert dev.rejoin_request(1)[-6:-4] == b"\x00\x00"
    s = dev.accept(accept_for(dev, 2, opt_neg=True, req_type=1, nonce=0))
    assert s.join_req_type == 1 and s.dev_nonce == 0
    assert dev.rj_count0 == 0 and dev.rj_count1 == 1


def test_rejoin_accept_without_optneg_is_rejected() -> None:
    dev = device("1.1")
    dev.rejoin_request(1)
    with pytest.raises(AcceptError):
        dev.accept(accept_for(dev, 1, req_type=1))


def test_rejoin_only_for_11() -> None:
    with pytest.raises(ValueError, match="1.1"):
        device("1.0.4").rejoin_request(1)
    with pytest.raises(ValueError, match="0, 1 or 2"):
        device("1.1").rejoin_request(3)


def test_state_round_trip() -> None:
    a = device("1.0.2")
    for _ in range(3):
        a.join_request()
    b = device("1.0.2")
    b.load_state(a.state())
    assert b.used_dev_nonces == a.used_dev_nonces
    c = device("1.1", next_dev_nonce=10)
    c.join_request()
    d = device("1.1")
    d.load_state(c.state())
    assert d.take_dev_nonce() == 11


def test_versions_are_checked() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        device("1.2")
    with pytest.raises(ValueError, match="NwkKey"):
        SimDevice(bytes(8), bytes(8), "1.1.0", bytes(16))
    assert device("1.1").mac_version == "1.1"
